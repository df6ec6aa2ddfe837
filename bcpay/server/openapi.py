"""The OpenAPI 3.0 document of bcpay's own HTTP API, served at ``/openapi.json``.

Written by hand next to the routes it describes; a property-based test
(schemathesis) checks that every answer the server gives conforms to it and
that no input produces a 5xx.
"""

from __future__ import annotations

from typing import Any

from bcpay import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}
_JSON_ERROR = {"application/json": {"schema": _ERROR}}


def _errors(*codes: int) -> dict[str, Any]:
    texts = {
        400: "malformed input",
        401: "signature, secret or token missing or wrong",
        403: "origin not allowed",
        404: "not found (also for a wrong cart id)",
        405: "method not allowed",
        409: "state conflict (already paid, not configured)",
        413: "body too large",
        422: "the order may not be paid this way",
        429: "rate limited (see Retry-After)",
        502: "an upstream refused the request",
        503: "an upstream is unavailable; retry",
    }
    return {str(c): {"description": texts[c], "content": _JSON_ERROR} for c in codes}


_STORE_HASH = {"name": "store_hash", "in": "path", "required": True,
               "schema": {"type": "string", "pattern": "^[a-z0-9]{1,32}$"}}
_TOKEN = {"name": "token", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 64}}


def document() -> dict[str, Any]:
    """The OpenAPI document."""
    payment_ok = {"description": "the payment", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Payment"}}}}
    html = {"text/html": {"schema": {"type": "string"}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "bcpay", "version": __version__,
                 "description": "CeleryPay (OKCloud Pay) payments for BigCommerce orders."},
        "paths": {
            "/api/v1/payments": {"post": {
                "summary": "Start or resume the payment of an order (the storefront snippet)",
                "operationId": "startPayment",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/StartPayment"}}}},
                "responses": {
                    "200": payment_ok,
                    "409": {"description": "already paid, or store not configured", "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/AlreadyPaid"}}}},
                    **_errors(400, 403, 404, 413, 422, 429, 502, 503),
                },
            }},
            "/api/v1/payments/{token}": {"get": {
                "summary": "The real status of a payment (asks CeleryPay while pending)",
                "operationId": "paymentStatus",
                "parameters": [_TOKEN],
                "responses": {"200": payment_ok, **_errors(403, 404, 429)},
            }},
            "/pay/{token}": {
                "get": {"summary": "Shopper pay page", "operationId": "payPage", "parameters": [_TOKEN],
                        "responses": {"200": {"description": "page", "content": html},
                                      "404": {"description": "unknown link", "content": html},
                                      **_errors(429)}},
                "post": {"summary": "Pay now: go to the cashier", "operationId": "payNow", "parameters": [_TOKEN],
                         "responses": {"303": {"description": "to the cashier or back to the page"},
                                       "404": {"description": "unknown link", "content": html},
                                       **_errors(413, 429)}},
            },
            "/pay/{token}/return": {"get": {
                "summary": "CeleryPay's return redirect", "operationId": "payReturn", "parameters": [_TOKEN],
                "responses": {"303": {"description": "to the confirmation page or the pay page"},
                              "404": {"description": "unknown link", "content": html}, **_errors(429)},
            }},
            "/notify/celerypay/{store_hash}": {"post": {
                "summary": "CeleryPay notifications (signed)", "operationId": "celerypayNotification",
                "parameters": [_STORE_HASH,
                               {"name": "CeleryPay-Merchant", "in": "header", "schema": {"type": "string"}},
                               {"name": "CeleryPay-Timestamp", "in": "header", "schema": {"type": "string"}},
                               {"name": "CeleryPay-Signature", "in": "header", "schema": {"type": "string"}}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "stored (or a duplicate)", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Received"}}}}, **_errors(400, 401, 404, 413)},
            }},
            "/webhooks/bigcommerce/{store_hash}": {"post": {
                "summary": "BigCommerce webhooks (custom secret header)", "operationId": "bigcommerceWebhook",
                "parameters": [_STORE_HASH,
                               {"name": "X-Bcpay-Secret", "in": "header", "schema": {"type": "string"}}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "accepted"}, **_errors(400, 401, 413)},
            }},
            "/bc/auth": {"get": {
                "summary": "BigCommerce app install callback", "operationId": "bcAuth",
                "parameters": [
                    {"name": "code", "in": "query", "required": True, "schema": {"type": "string", "minLength": 1}},
                    {"name": "scope", "in": "query", "required": True, "schema": {"type": "string"}},
                    {"name": "context", "in": "query", "required": True,
                     "schema": {"type": "string", "pattern": "^stores/[a-z0-9]{1,32}$"}},
                ],
                "responses": {"303": {"description": "installed: to the settings page"},
                              **{str(c): {"description": "install failed; nothing installed", "content": html}
                                 for c in (400, 401, 404, 409, 502, 503)},
                              "429": {"description": "too many installs from this client "
                                                     "(server.install_attempts_per_minute); nothing installed",
                                      "content": html, "headers": {"Retry-After": {"schema": {"type": "integer"}}}}},
            }},
            **{f"/bc/{name}": {"get": {
                "summary": summary, "operationId": f"bc_{name}",
                "parameters": [{"name": "signed_payload_jwt", "in": "query", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {ok: {"description": "done"},
                              "401": {"description": "unsigned, wrongly signed, expired or for another app",
                                      "content": html}},
            }} for name, summary, ok in (
                ("load", "BigCommerce app load callback", "303"),
                ("uninstall", "BigCommerce app uninstall callback", "200"),
                ("remove_user", "BigCommerce app remove-user callback", "200"),
            )},
            "/bc/settings": {"get": {
                "summary": "Merchant settings page (needs the session from /bc/load)", "operationId": "bcSettings",
                "responses": {"200": {"description": "page", "content": html},
                              "401": {"description": "no session", "content": html}},
            }},
            "/healthz": {"get": {"summary": "liveness", "operationId": "healthz", "responses": {
                "200": {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/readyz": {"get": {"summary": "readiness (database)", "operationId": "readyz", "responses": {
                "200": {"description": "ready", "content": {"application/json": {"schema": {"type": "object"}}}},
                "503": {"description": "database unreachable",
                        "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "operationId": "metrics", "responses": {
                "200": {"description": "text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/static/inject.js": {"get": {"summary": "the storefront snippet", "operationId": "snippet", "responses": {
                "200": {"description": "JavaScript", "content": {"text/javascript": {"schema": {"type": "string"}}}},
                "304": {"description": "not modified"}}}},
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
            "StartPayment": {"type": "object", "required": ["store_hash", "order_id", "cart_id"], "properties": {
                "store_hash": {"type": "string", "pattern": "^[a-z0-9]{1,32}$"},
                "order_id": {"type": "integer", "minimum": 1, "maximum": 999999999999},
                "cart_id": {"type": "string", "pattern": "^[A-Za-z0-9-]{1,64}$"}}},
            "Payment": {"type": "object", "required": [
                "token", "store_hash", "order_id", "state", "status", "amount", "amount_display", "currency",
                "cashier_url", "expires_at", "pay_url"], "properties": {
                "token": {"type": "string"}, "store_hash": {"type": "string"},
                "order_id": {"type": "integer"},
                "state": {"type": "string", "enum": ["awaiting_payment", "paid", "under_review", "failed",
                                                      "expired", "cancelled", "refunded"]},
                "status": {"type": "string"},
                "amount": {"type": "integer", "minimum": 0, "description": "minor units"},
                "amount_display": {"type": "string"}, "currency": {"type": "string"},
                "cashier_url": {"type": "string", "nullable": True},
                "expires_at": {"type": "string", "nullable": True},
                "pay_url": {"type": "string"},
                "failure_message": {"type": "string", "nullable": True}}},
            "AlreadyPaid": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "object"}, "payment": {"$ref": "#/components/schemas/Payment"}}},
            "Received": {"type": "object", "required": ["received", "event_id", "outcome"], "properties": {
                "received": {"type": "boolean"}, "event_id": {"type": "string"}, "outcome": {"type": "string"}}},
        }},
    }
