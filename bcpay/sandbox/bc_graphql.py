"""The fake BigCommerce's GraphQL Admin API, as far as App Extensions go (reference section 14).

``POST /stores/{hash}/graphql`` answers three operations, told apart by the
field they name: the ``store { appExtensions }`` query, and the
``createAppExtension`` / ``deleteAppExtension`` mutations (the shapes of the
App Extensions guide). Extensions are per store and per app (the token's
client); an app may have two per model ("a limit of two App Extensions per
app, per model"). As GraphQL does, every refusal is a 200 with ``errors``.
Anything else is refused, so a query bcpay should not send fails loudly.
"""

from __future__ import annotations

import itertools
import re
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bcpay.sandbox.bc_state import JSON

if TYPE_CHECKING:
    from bcpay.sandbox.bc_state import Store

MODELS = frozenset({"ORDERS", "PRODUCTS", "CUSTOMERS"})
CONTEXTS = frozenset({"PANEL", "LINK"})
PER_MODEL = 2
SCOPE = "store_app_extensions_manage"
_LOCALE = re.compile(r"[a-z]{2}(-[A-Z]{2})?")
_ids = itertools.count(1)


def _errors(message: str) -> Response:
    return JSONResponse({"errors": [{"message": message}]})


def _node(extension: JSON) -> JSON:
    return {k: extension[k] for k in ("id", "model", "context", "url", "label")}


def _create(store: Store, client_id: str, variables: dict[str, Any]) -> Response:
    data = variables.get("input")
    if not isinstance(data, dict):
        return _errors("Variable $input of type CreateAppExtensionInput! was not provided.")
    model, context, url, label = data.get("model"), data.get("context"), data.get("url"), data.get("label")
    if model not in MODELS or context not in CONTEXTS:
        return _errors("model or context is not one of the enum's values.")
    if not isinstance(url, str) or not url.startswith("/") or len(url) > 255:
        return _errors("url must be a relative path starting with /.")
    if not isinstance(label, dict) or not isinstance(label.get("defaultValue"), str) or not label["defaultValue"]:
        return _errors("label.defaultValue is required.")
    locales = label.get("locales") or []
    if not isinstance(locales, list) or not all(
            isinstance(x, dict) and isinstance(x.get("value"), str) and _LOCALE.fullmatch(str(x.get("localeCode")))
            for x in locales):
        return _errors("label.locales must be {value, localeCode} pairs.")
    mine = [e for e in store.app_extensions.values() if e["client_id"] == client_id and e["model"] == model]
    if len(mine) >= PER_MODEL:
        return _errors(f"An app can register at most {PER_MODEL} App Extensions per model.")
    extension_id = f"bc/store/appExtension/{next(_ids)}"
    extension = {"id": extension_id, "client_id": client_id, "model": model, "context": context, "url": url,
                 "label": {"defaultValue": label["defaultValue"], "locales": locales}}
    store.app_extensions[extension_id] = extension
    return JSONResponse({"data": {"appExtension": {"createAppExtension": {"appExtension": _node(extension)}}}})


def _delete(store: Store, client_id: str, variables: dict[str, Any]) -> Response:
    data = variables.get("input")
    extension_id = data.get("id") if isinstance(data, dict) else None
    found = store.app_extensions.get(str(extension_id))
    if found is None or found["client_id"] != client_id:
        return _errors("App extension not found.")
    del store.app_extensions[found["id"]]
    return JSONResponse({"data": {"appExtension": {"deleteAppExtension": {"deletedAppExtensionId": found["id"]}}}})


def answer(store: Store, client_id: str, body: Any) -> Response:
    """One GraphQL request of the app ``client_id`` on ``store``."""
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        return JSONResponse({"errors": [{"message": "A query is required."}]}, status_code=400)
    query, variables = body["query"], body.get("variables") or {}
    if not isinstance(variables, dict):
        return _errors("variables must be an object.")
    if "createAppExtension" in query:
        return _create(store, client_id, variables)
    if "deleteAppExtension" in query:
        return _delete(store, client_id, variables)
    if "appExtensions" in query:
        edges = [{"node": _node(e)} for e in store.app_extensions.values() if e["client_id"] == client_id]
        return JSONResponse({"data": {"store": {"appExtensions": {"edges": edges}}}})
    return _errors("This sandbox answers App Extension queries only.")


async def endpoint(request: Request, store: Store, client_id: str) -> Response:
    """``POST /graphql`` for the fake's router."""
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"errors": [{"message": "The request body is not valid JSON."}]}, status_code=400)
    return answer(store, client_id, body)
