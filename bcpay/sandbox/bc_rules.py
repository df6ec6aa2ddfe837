"""Validation and query rules of the fake BigCommerce REST resources.

What a valid script, hook or order metafield body is (scripts.v3.yml,
webhooks.v3.yml, orders.v3.yml), which orders a v2 list query selects and in
what order, and the v3 pagination envelope. Refusals are
:class:`~bcpay.sandbox.bc_state.FakeApiError`; the HTTP face renders them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from starlette.requests import Request

from bcpay.sandbox.bc_state import JSON, FakeApiError

_ORDER_SORTS = {"id", "customer_id", "date_created", "date_modified", "status_id", "channel_id",
                "external_id"}


def int_param(request: Request, name: str, default: int | None = None) -> int | None:
    """An integer query parameter, or FakeApiError 400."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise FakeApiError(400, f"The filter '{name}' must be an integer.") from None


def parse_bc_date(raw: str, name: str = "date") -> datetime:
    """Parse an RFC-2822 or ISO-8601 filter value; naive values are taken as UTC."""
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        try:
            moment = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            raise FakeApiError(400, f"The filter '{name}' is not an RFC-2822 or ISO-8601 date.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _total(order: JSON) -> Decimal:
    return Decimal(order["total_inc_tax"])


def _created(order: JSON) -> datetime:
    return parsedate_to_datetime(order["date_created"])


def _modified(order: JSON) -> datetime:
    return parsedate_to_datetime(order["date_modified"])


def _decimal_param(request: Request, name: str) -> Decimal | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return Decimal(raw)
    except InvalidOperation:
        raise FakeApiError(400, f"The filter '{name}' must be a number.") from None


def _date_param(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    return parse_bc_date(raw, name) if raw else None


def order_filters(request: Request) -> Callable[[JSON], bool]:
    """The GET /v2/orders query as one predicate over stored v2 orders."""
    q = request.query_params
    ranges: list[tuple[Callable[[JSON], Any], Any, Any]] = [
        (lambda o: o["id"], int_param(request, "min_id"), int_param(request, "max_id")),
        (_total, _decimal_param(request, "min_total"), _decimal_param(request, "max_total")),
        (_created, _date_param(request, "min_date_created"), _date_param(request, "max_date_created")),
        (_modified, _date_param(request, "min_date_modified"),
         _date_param(request, "max_date_modified")),
    ]
    equals: dict[str, Any] = {key: int_param(request, key)
                              for key in ("customer_id", "status_id", "channel_id")}
    equals.update({key: q.get(key) for key in ("cart_id", "payment_method", "external_order_id")})
    wanted = {key: value for key, value in equals.items() if value is not None}
    email = q.get("email", "").lower()
    # Archived (is_deleted) orders are left out unless asked for.
    deleted = q.get("is_deleted", "false").lower() == "true"

    def matches(order: JSON) -> bool:
        for get, low, high in ranges:
            if (low is not None and get(order) < low) or (high is not None and get(order) > high):
                return False
        if any(order.get(key) != value for key, value in wanted.items()):
            return False
        if email and order["billing_address"]["email"].lower() != email:
            return False
        return bool(order["is_deleted"]) == deleted
    return matches


def order_sort_key(request: Request) -> tuple[Callable[[JSON], Any], bool]:
    """The ``sort=field[:asc|desc]`` key of GET /v2/orders (default ``id:asc``)."""
    field_name, _, direction = request.query_params.get("sort", "id:asc").partition(":")
    if field_name not in _ORDER_SORTS or direction not in ("", "asc", "desc"):
        raise FakeApiError(400, "The sort parameter is invalid.")

    def key(order: dict[str, Any]) -> Any:
        value = order.get(field_name)
        if field_name.startswith("date_"):
            return parsedate_to_datetime(value or "")
        return (value is None, value if value is not None else 0, order["id"])
    return key, direction == "desc"


def paginate(items: list[dict[str, Any]], request: Request) -> dict[str, Any]:
    """A v3 collection body: one page of ``items`` and its ``meta.pagination``."""
    page = int_param(request, "page", 1) or 1
    limit = int_param(request, "limit", 50) or 50
    if page < 1 or limit < 1:
        raise FakeApiError(422, "page and limit must be positive.", {"page": "invalid"})
    total = len(items)
    pages = max((total + limit - 1) // limit, 1)
    window = items[(page - 1) * limit: page * limit]
    links = {"current": f"?page={page}&limit={limit}"}
    if page > 1:
        links["previous"] = f"?page={page - 1}&limit={limit}"
    if page < pages:
        links["next"] = f"?page={page + 1}&limit={limit}"
    return {"data": window, "meta": {"pagination": {
        "total": total, "count": len(window), "per_page": limit, "current_page": page,
        "total_pages": pages, "links": links}}}


def hook_matches(hook: dict[str, Any], request: Request) -> bool:
    """The GET /v3/hooks filters: ``is_active``, ``scope``, ``destination``."""
    q = request.query_params
    if "is_active" in q and hook["is_active"] != (q["is_active"].lower() == "true"):
        return False
    return all(hook[name] == q[name] for name in ("scope", "destination") if name in q)


# --- v3 resource bodies (scripts.v3.yml, webhooks.v3.yml, orders.v3.yml) ---------

_SCRIPT_ENUMS = {
    "kind": ("src", "script_tag"),
    "load_method": ("default", "async", "defer"),
    "location": ("head", "footer"),
    "visibility": ("storefront", "all_pages", "checkout", "order_confirmation"),
    "consent_category": ("essential", "functional", "analytics", "targeting"),
}
_SCRIPT_READ_ONLY = frozenset({"uuid", "api_client_id", "date_created", "date_modified"})
_SCRIPT_FIELDS = frozenset({"name", "description", "html", "src", "auto_uninstall",
                            "channel_id", "enabled", "integrity_hashes"}) | _SCRIPT_ENUMS.keys()
_SRI = ("sha256-", "sha384-", "sha512-")
_SCRIPT_DEFAULTS: JSON = {
    "description": "", "kind": "src", "load_method": "default", "location": "head",
    "visibility": "storefront", "consent_category": "unknown", "auto_uninstall": False,
    "enabled": True, "channel_id": 1, "integrity_hashes": [],
}


def _unprocessable(errors: dict[str, str]) -> FakeApiError:
    return FakeApiError(422, "JSON data is missing or invalid", errors)


def validate_script(body: object, current: JSON | None) -> JSON:
    """Check a script POST (``current`` None) or PUT body; the merged script."""
    if not isinstance(body, dict):
        raise _unprocessable({"body": "must be a JSON object"})
    errors: dict[str, str] = {}
    for key in body.keys() - _SCRIPT_FIELDS - _SCRIPT_READ_ONLY:
        errors[key] = "unknown field"
    given = {k: v for k, v in body.items() if k in _SCRIPT_FIELDS}
    for key, allowed in _SCRIPT_ENUMS.items():
        if key in given and given[key] not in allowed:
            errors[key] = f"must be one of {', '.join(allowed)}"
    for key in ("auto_uninstall", "enabled"):
        if key in given and not isinstance(given[key], bool):
            errors[key] = "must be a boolean"
    for key in ("name", "description", "html", "src"):
        if key in given and not isinstance(given[key], str):
            errors[key] = "must be a string"
    if "channel_id" in given and (isinstance(given["channel_id"], bool)
                                  or not isinstance(given["channel_id"], int)
                                  or given["channel_id"] < 1):
        errors["channel_id"] = "must be an integer >= 1"
    hashes = given.get("integrity_hashes", [])
    if not isinstance(hashes, list) or len(hashes) > 5 or not all(
            isinstance(h, str) and h.startswith(_SRI) for h in hashes):
        errors["integrity_hashes"] = "at most 5 sha256-/sha384-/sha512- strings"
    if errors:
        raise _unprocessable(errors)
    script = {**(_SCRIPT_DEFAULTS if current is None else {}), **(current or {}), **given}
    if current is not None and "kind" in given and given["kind"] != current["kind"]:
        # Switching kind drops the stored payload of the old kind (a resent one is refused below).
        stale = "src" if given["kind"] == "script_tag" else "html"
        if stale not in given:
            script.pop(stale, None)
    name = script.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 255:
        errors["name"] = "required, 1 to 255 characters"
    if script["kind"] == "src":
        if "html" in given or script.get("html"):
            errors["html"] = "html is only allowed with kind script_tag"
        if not script.get("src"):
            errors["src"] = "src is required with kind src"
    else:
        if "src" in given or script.get("src"):
            errors["src"] = "src is only allowed with kind src"
        html = script.get("html")
        if not isinstance(html, str) or not 0 < len(html) <= 65536:
            errors["html"] = "html is required with kind script_tag (max 65536 characters)"
        if script["load_method"] != "default":
            errors["load_method"] = "must be default with kind script_tag"
        if script["integrity_hashes"]:
            errors["integrity_hashes"] = "only for kind src"
    if errors:
        raise _unprocessable(errors)
    script.setdefault("html" if script["kind"] == "script_tag" else "src", "")
    return script


_HOOK_FIELDS = frozenset({"scope", "destination", "is_active", "headers"})
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def validate_hook(body: object, current: JSON | None, *, strict: bool) -> JSON:
    """Check a hook POST (``current`` None) or PUT body; the merged hook fields."""
    if not isinstance(body, dict) or (current is not None and not body):
        raise FakeApiError(400, "Input is invalid.", {"body": "a JSON object with at least one field"})
    errors = dict.fromkeys(body.keys() - _HOOK_FIELDS, "unknown field")
    hook = {"is_active": True, "headers": None, **(current or {}), **{
        k: v for k, v in body.items() if k in _HOOK_FIELDS}}
    scope = hook.get("scope")
    if not isinstance(scope, str) or not scope.startswith("store/") or " " in scope:
        errors["scope"] = "required, a webhook scope such as store/order/statusUpdated"
    destination = hook.get("destination")
    if not isinstance(destination, str) or not _destination_ok(destination, strict):
        errors["destination"] = ("required, an https URL on port 443"
                                 + ("" if strict else " (or http on loopback in the sandbox)"))
    if not isinstance(hook["is_active"], bool):
        errors["is_active"] = "must be a boolean"
    headers = hook["headers"]
    if headers is not None and not (isinstance(headers, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items())):
        errors["headers"] = "must be an object of string values"
    if errors:
        raise _unprocessable(errors)
    return hook


def _destination_ok(destination: str, strict: bool) -> bool:
    try:
        url = httpx.URL(destination)
    except httpx.InvalidURL:
        return False
    if not url.host:
        return False
    if url.scheme == "https" and url.port in (None, 443):
        return True
    return not strict and url.scheme in ("http", "https") and url.host in _LOOPBACK_HOSTS


_METAFIELD_PERMISSIONS = ("app_only", "read", "write", "read_and_sf_access", "write_and_sf_access")


def validate_metafield(body: object) -> JSON:
    """Check a metafield POST/PUT body (all of `MetafieldBase_Post`'s required fields)."""
    if not isinstance(body, dict):
        raise _unprocessable({"body": "must be a JSON object"})
    errors: dict[str, str] = {}
    if body.get("permission_set") not in _METAFIELD_PERMISSIONS:
        errors["permission_set"] = f"required, one of {', '.join(_METAFIELD_PERMISSIONS)}"
    for key, low, high in (("namespace", 1, 64), ("key", 1, 64), ("value", 1, 65535)):
        value = body.get(key)
        if not isinstance(value, str) or not low <= len(value) <= high:
            errors[key] = f"required, a string of {low} to {high} characters"
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > 255:
        errors["description"] = "a string of at most 255 characters"
    if errors:
        raise _unprocessable(errors)
    fields = ("permission_set", "namespace", "key", "value", "description")
    return {k: body[k] for k in fields if k in body}
