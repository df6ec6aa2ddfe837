"""Money: BigCommerce decimal strings <-> CeleryPay integer minor units.

BigCommerce reports amounts as decimal strings (``"19.9900"``); CeleryPay wants
integers in the currency's minor unit (ISO 4217 exponent: JPY 0, USD 2, KWD 3).
Conversion is exact or it fails: a value that would lose precision, a negative,
NaN, infinite or absurdly large value is refused, never rounded.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from bcpay.errors import InvalidInputError

# ISO 4217 currencies whose minor unit is not 2. Every other well-formed code
# is taken as exponent 2. CeleryPay supports exponents 0, 2 and 3 only; the
# exponent-4 units (CLF, UYW) are listed so that they are refused, not guessed.
_EXPONENTS: dict[str, int] = {
    # exponent 0
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0,
    "XPF": 0,
    # exponent 3
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    # exponent 4: not supported by CeleryPay
    "CLF": 4, "UYW": 4,
}
# Codes without a minor unit at all (precious metals, testing, "no currency").
_NO_MINOR_UNIT = {"XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA", "XXX"}

MAX_MINOR = 10**15  # far above any real order; guards against absurd input
_CODE = re.compile(r"[A-Z]{3}")


def exponent(currency: str) -> int:
    """The ISO 4217 minor-unit exponent of ``currency`` (0, 2 or 3 here)."""
    if not isinstance(currency, str) or not _CODE.fullmatch(currency):
        raise InvalidInputError(f"not an ISO 4217 currency code: {currency!r}", code="invalid_currency")
    if currency in _NO_MINOR_UNIT or _EXPONENTS.get(currency, 2) not in (0, 2, 3):
        raise InvalidInputError(
            f"currency {currency} has no minor unit CeleryPay supports", code="currency_not_supported"
        )
    return _EXPONENTS.get(currency, 2)


def to_minor(amount: str | Decimal | int, currency: str) -> int:
    """Convert ``"19.9900"`` USD to ``1999``; refuse anything inexact or unsafe."""
    if isinstance(amount, (bool, float)):
        raise InvalidInputError("amounts must be decimal strings or Decimal, never float", code="invalid_amount")
    try:
        value = Decimal(amount.strip() if isinstance(amount, str) else amount)
    except (InvalidOperation, ValueError, TypeError):
        raise InvalidInputError(f"not a decimal amount: {amount!r}", code="invalid_amount") from None
    if not value.is_finite():
        raise InvalidInputError(f"not a finite amount: {amount!r}", code="invalid_amount")
    if value < 0:
        raise InvalidInputError(f"negative amount: {amount!r}", code="invalid_amount")
    exp = exponent(currency)
    if abs(value.adjusted()) > 30:
        raise InvalidInputError(f"amount out of range: {amount!r}", code="invalid_amount")
    scaled = value.scaleb(exp)
    if scaled != scaled.to_integral_value():
        raise InvalidInputError(
            f"{amount!r} has more decimals than {currency} allows ({exp})", code="invalid_amount"
        )
    minor = int(scaled)
    if minor > MAX_MINOR:
        raise InvalidInputError(f"amount out of range: {amount!r}", code="invalid_amount")
    return minor


def from_minor(minor: int, currency: str) -> Decimal:
    """Convert ``1999`` USD back to ``Decimal("19.99")``."""
    if isinstance(minor, bool) or not isinstance(minor, int) or not 0 <= minor <= MAX_MINOR:
        raise InvalidInputError(f"not a minor-unit amount: {minor!r}", code="invalid_amount")
    return Decimal(minor).scaleb(-exponent(currency))


def format_amount(minor: int, currency: str) -> str:
    """Human text such as ``19.99 USD`` or ``1.234 KWD``."""
    exp = exponent(currency)
    return f"{from_minor(minor, currency):.{exp}f} {currency}"
