"""The BigCommerce app face: the callbacks, and the iframe plumbing the settings page stands on.

Callbacks (paths are part of the product, reference section 1):
``GET /bc/auth`` installs (all or nothing, :mod:`bcpay.install`), ``GET
/bc/load`` opens the settings page for a verified user, ``GET /bc/uninstall``
and ``GET /bc/remove_user`` forget the store or one user. Anything unsigned,
wrongly signed, expired, for another app, or for a store the app is not
installed on answers 401 and changes nothing.

Everything shown in the control panel's iframe goes through :func:`bc_page`
(``frame-ancestors`` from ``app.control_panel_origins``, no scripts) and,
past the callbacks, through :func:`viewer_of` / :func:`posted`: a signed
session cookie (:mod:`bcpay.server.sessions`) for a still-known user of a
still-installed store, and a CSRF token on every POST (403, nothing changed,
without it). The page itself is :mod:`bcpay.server.settings_page`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from bcpay import install
from bcpay.crypto import SANDBOX_KEY
from bcpay.errors import BcpayError, InvalidInputError, NotFoundError, SignatureError
from bcpay.install import AppUser
from bcpay.runtime import Runtime
from bcpay.server.middleware import route_name
from bcpay.server.pages import render_page
from bcpay.server.sessions import COOKIE_NAME, Session, SessionSigner, cookie_header
from bcpay.signatures import BcClaims, verify_bc_jwt
from bcpay.storage.records import StoreRecord

log = logging.getLogger("bcpay.bcapp")

SESSION_LOST = (
    "Your session has ended",
    "Open OKCloud Pay again from the Apps menu of your BigCommerce control panel.",
)
# scheme://host[:port]; the host may hold "*" (CSP3 allows it only as a leading "*.").
_ORIGIN = re.compile(r"(https?)://([A-Za-z0-9*.-]+)(:(?:[0-9]{1,5}|\*))?")


def frame_ancestors(patterns: tuple[str, ...], store_hash: str | None) -> str:
    """The ``frame-ancestors`` sources for ``app.control_panel_origins``.

    ``https://store-*.mybigcommerce.com`` is not a valid CSP source (a
    wildcard may only be a whole leading label), and browsers drop invalid
    sources. For a known store it becomes that store's exact control-panel
    origin; otherwise the wildcard widens to its parent (``https://*.mybigcommerce.com``).
    """
    sources: list[str] = []
    for pattern in patterns:
        match = _ORIGIN.fullmatch(pattern.strip().rstrip("/"))
        if match is None:
            log.warning(
                "app.control_panel_origins: ignoring %r (expected scheme://host[:port])", pattern
            )
            continue
        scheme, host, port = match.group(1), match.group(2), match.group(3) or ""
        prefix = "*." if host.startswith("*.") else ""
        rest = host[len(prefix) :]
        if "*" in rest:
            if store_hash:
                rest = rest.replace("*", store_hash)
            elif "." in rest:
                prefix, rest = "*.", rest.split(".", 1)[1]
            else:
                continue
        host = prefix + rest
        if rest and "*" not in rest:
            sources.append(f"{scheme}://{host}{port}")
    return " ".join(dict.fromkeys(sources)) or "'none'"


def bc_page(
    request: Request,
    name: str,
    status: int = 200,
    *,
    store_hash: str | None = None,
    **context: object,
) -> HTMLResponse:
    """Render a template for the control-panel iframe (no scripts at all)."""
    ancestors = frame_ancestors(runtime_of(request).settings.app.control_panel_origins, store_hash)
    return render_page(name, status, form_action="'self'", frame_ancestors=ancestors, scripts=False, **context)


def error_page(
    request: Request, status: int, title: str, message: str, *, store_hash: str | None = None
) -> HTMLResponse:
    """A clear page for a failure (shown in the iframe)."""
    return bc_page(
        request, "settings_error.html", status, store_hash=store_hash, title=title, message=message
    )


def runtime_of(request: Request) -> Runtime:
    """The process runtime opened in the lifespan."""
    rt: Runtime = request.app.state.runtime
    return rt


def _signer(rt: Runtime) -> SessionSigner:
    return SessionSigner(rt.settings.app.secret_key.get() or SANDBOX_KEY, clock=rt.wall)


def _signed_in(rt: Runtime, store_hash: str, user_id: int, to: str = "/bc/settings") -> Response:
    """Start a session for this user and show the settings page, or ``to`` (303, so a reload never replays
    the callback)."""
    value, _ = _signer(rt).issue(store_hash, user_id)
    response = RedirectResponse(
        to,
        status_code=303,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )
    response.headers.append("set-cookie", cookie_header(value))
    return response


# --- callbacks --------------------------------------------------------------------


async def auth(request: Request) -> Response:
    """GET /bc/auth?code=&scope=&context=: install, then open the settings page.

    Limited per client IP (``server.install_attempts_per_minute``): each attempt
    makes bcpay call BigCommerce's OAuth endpoint, and a flood of junk codes
    must not spend that on an attacker's behalf.
    """
    rt = runtime_of(request)
    params = request.query_params
    client = request.client.host if request.client else "unknown"
    wait = request.app.state.install_attempts.take(client)
    if wait:
        retry = max(1, int(wait + 0.999))
        page = error_page(request, 429, "Too many installation attempts",
                          f"Nothing was installed. Wait {retry} seconds, then start the installation again from "
                          "your BigCommerce control panel.", store_hash=_context_hash(params.get("context", "")))
        page.headers["Retry-After"] = str(retry)
        return page
    try:
        done = await install.install_from_oauth(
            rt,
            code=params.get("code", ""),
            scope=params.get("scope", ""),
            context=params.get("context", ""),
        )
    except BcpayError as exc:
        log.warning("install failed: %r", exc)
        hint = (
            "Nothing was installed. Start the installation again from your BigCommerce control panel; "
            "if it keeps failing, send this message to your OKCloud Pay contact."
        )
        return error_page(
            request,
            exc.http_status,
            "OKCloud Pay could not be installed",
            f"{exc.message[:400]}. {hint}",
            store_hash=_context_hash(params.get("context", "")),
        )
    return _signed_in(rt, done.store.store_hash, done.user.user_id)


def _context_hash(context: str) -> str | None:
    try:
        return install.store_hash_of_context(context)
    except InvalidInputError:
        return None


def _claims(request: Request) -> BcClaims:
    rt = runtime_of(request)
    app = rt.settings.app
    return verify_bc_jwt(
        request.query_params.get("signed_payload_jwt", ""),
        client_id=app.client_id,
        client_secret=app.client_secret.get(),
        now=rt.wall(),
    )


def _refused(request: Request, exc: BcpayError) -> HTMLResponse:
    log.warning("refused app callback %s: %s", route_name(request.scope), exc.message)
    return error_page(
        request,
        401,
        "This link is not valid",
        f"{exc.message}. Open OKCloud Pay again from your BigCommerce control panel.",
    )


async def load(request: Request) -> Response:
    """GET /bc/load?signed_payload_jwt=: a control-panel user opens the app."""
    rt = runtime_of(request)
    try:
        claims = _claims(request)
        store, user = await install.open_app(rt, claims)
    except (SignatureError, NotFoundError) as exc:
        return _refused(request, exc)
    # The Orders page's App Extension loads the app with its URL in the `url` claim: open that order's panel.
    from bcpay.server.order_panel import lang_of, order_of_url

    order_id = order_of_url(claims.url)
    if order_id is not None:
        return _signed_in(rt, store.store_hash, user.user_id, f"/bc/orders/{order_id}?lang={lang_of(claims.locale)}")
    return _signed_in(rt, store.store_hash, user.user_id)


async def uninstall(request: Request) -> Response:
    """GET /bc/uninstall?signed_payload_jwt=: forget the store's secrets, users and jobs."""
    try:
        claims = _claims(request)
        outcome = await install.uninstall_app(runtime_of(request), claims)
    except (SignatureError, NotFoundError) as exc:
        return _refused(request, exc)
    return PlainTextResponse(outcome)


async def remove_user(request: Request) -> Response:
    """GET /bc/remove_user?signed_payload_jwt=: forget the user the JWT names."""
    try:
        claims = _claims(request)
        known = await install.forget_user(runtime_of(request), claims)
    except (SignatureError, NotFoundError) as exc:
        return _refused(request, exc)
    return PlainTextResponse("user removed" if known else "user was not known")


# --- the settings page: who is looking ------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    """The verified session behind one settings-page request."""

    session: Session
    store: StoreRecord
    user: AppUser
    signer: SessionSigner

    def csrf(self) -> str:
        """A fresh CSRF token for one form."""
        return self.signer.csrf_token(self.session)


class Denied(Exception):
    """The request may not touch the settings page; rendered as an error page."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(title)
        self.status, self.title, self.message = status, title, message


async def viewer_of(request: Request) -> Viewer:
    """The session's store and user, still installed and still known, or :class:`Denied` (401)."""
    rt = runtime_of(request)
    signer = _signer(rt)
    try:
        session = signer.read(request.cookies.get(COOKIE_NAME))
        store = await install.installed_store(rt, session.store_hash)
    except (SignatureError, NotFoundError):
        raise Denied(401, *SESSION_LOST) from None
    user = await install.find_user(rt, store, session.user_id)
    if user is None:  # removed by /bc/remove_user, or the app was re-installed since
        raise Denied(401, *SESSION_LOST)
    return Viewer(session, store, user, signer)


async def posted(request: Request) -> tuple[Viewer, FormData]:
    """A settings-page POST: valid session and a CSRF token of that session, else :class:`Denied`."""
    viewer = await viewer_of(request)
    form = await request.form()
    try:
        viewer.signer.check_csrf(viewer.session, field(form, "csrf"))
    except SignatureError:
        raise Denied(
            403, "This form has expired", "Nothing was changed. Reload the page and try again."
        ) from None
    return viewer, form


def field(form: FormData, name: str, limit: int = 256) -> str:
    """One text field of a form ('' when absent or not text)."""
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


Handler = Callable[[Request], Awaitable[Response]]


def page(handler: Handler) -> Handler:
    """Turn :class:`Denied` into its error page."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except Denied as denied:
            return error_page(request, denied.status, denied.title, denied.message)

    endpoint.__doc__ = handler.__doc__
    return endpoint
