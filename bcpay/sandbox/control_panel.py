"""The sandbox control panel's settings pages: the steps no API does for the merchant.

BigCommerce has no API to rename an offline payment method, write its
instructions, switch the order-status e-mails or (for a merchant) see a
script's consent category at a glance; a merchant does these in the control
panel. These pages let a sandbox user do them the same way, with the same
effect on the fake store: the checkout lists the new name, the order e-mail
quotes the instructions, a ticked status e-mails the customer, and a script
moved out of ``essential`` no longer loads behind the consent banner.

- ``/manage/settings/payment``: offline methods (enabled, display name, instructions).
- ``/manage/settings/order-notifications``: which status changes e-mail the customer.
- ``/manage/storefront/script-manager``: the installed scripts and their consent category.
- ``/manage/emails``: what the store has e-mailed its customers (the sandbox's mailbox).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from bcpay.sandbox.bc_state import ORDER_STATUSES, FakeBigCommerce, Store

Render = Callable[..., HTMLResponse]
_MAX_NAME, _MAX_INSTRUCTIONS = 100, 2000
# scripts.v3.yml's consent_category values, in the control panel's order.
CONSENT_CATEGORIES = ("essential", "functional", "analytics", "targeting")


class SettingsPages:
    """Handlers of one store's settings pages; ``render(template, status=200, **context)`` draws a page."""

    def __init__(self, state: FakeBigCommerce, store_hash: str, render: Render) -> None:
        self.state = state
        self.store_hash = store_hash
        self.render = render

    @property
    def store(self) -> Store:
        return self.state.store(self.store_hash)

    def routes(self) -> list[Route]:
        return [
            Route("/manage/settings/payment", self.payment, methods=["GET", "POST"]),
            Route("/manage/settings/order-notifications", self.notifications, methods=["GET", "POST"]),
            Route("/manage/storefront/script-manager", self.scripts, methods=["GET", "POST"]),
            Route("/manage/emails", self.emails),
        ]

    async def payment(self, request: Request) -> Response:
        methods = [m for m in self.store.payment_methods if m.offline]
        if request.method == "GET":
            return self._payment_page(methods, saved=request.query_params.get("saved") == "1")
        form = await request.form()
        method = next((m for m in methods if m.code == form.get("code")), None)
        name = str(form.get("name", "")).strip()
        instructions = str(form.get("instructions", "")).strip()
        if method is None:
            return self._payment_page(methods, error="Choose an offline payment method.")
        if not name or len(name) > _MAX_NAME:
            return self._payment_page(methods, error=f"Enter a display name of 1 to {_MAX_NAME} characters.")
        if len(instructions) > _MAX_INSTRUCTIONS:
            return self._payment_page(methods, error=f"Keep the instructions under {_MAX_INSTRUCTIONS} characters.")
        method.name, method.instructions = name, instructions
        method.enabled = form.get("enabled") == "on"
        return RedirectResponse("/manage/settings/payment?saved=1", status_code=303)

    def _payment_page(self, methods: list[Any], *, error: str | None = None, saved: bool = False) -> Response:
        return self.render("manage_payment.html", status=400 if error else 200, methods=methods,
                           error=error, saved=saved)

    async def notifications(self, request: Request) -> Response:
        if request.method == "POST":
            form = await request.form()
            ticked = {int(str(v)) for v in form.getlist("status_id") if str(v).isdigit()}
            if not ticked <= ORDER_STATUSES.keys():
                return self._notifications_page(error="Choose valid order statuses.")
            self.store.status_emails = ticked
            return RedirectResponse("/manage/settings/order-notifications?saved=1", status_code=303)
        return self._notifications_page(saved=request.query_params.get("saved") == "1")

    def _notifications_page(self, *, error: str | None = None, saved: bool = False) -> Response:
        statuses = {sid: pair for sid, pair in ORDER_STATUSES.items() if sid != 0}
        return self.render("manage_notifications.html", status=400 if error else 200, statuses=statuses,
                           ticked=self.store.status_emails, error=error, saved=saved)

    async def scripts(self, request: Request) -> Response:
        store = self.store
        if request.method == "POST":
            form = await request.form()
            script = store.scripts.get(str(form.get("uuid", "")))
            category = str(form.get("consent_category", ""))
            if script is None or category not in CONSENT_CATEGORIES:
                return self._scripts_page(error="Choose a script and a consent category.")
            script["consent_category"] = category
            return RedirectResponse("/manage/storefront/script-manager", status_code=303)
        return self._scripts_page()

    def _scripts_page(self, *, error: str | None = None) -> Response:
        scripts = sorted(self.store.scripts.values(), key=lambda s: str(s["name"]).lower())
        return self.render("manage_scripts.html", status=400 if error else 200, scripts=scripts,
                           categories=CONSENT_CATEGORIES, error=error)

    async def emails(self, request: Request) -> Response:
        return self.render("manage_emails.html", emails=list(reversed(self.store.emails)))


__all__ = ["SettingsPages"]
