"""Money: exact conversion between BigCommerce decimals and minor units."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bcpay.errors import InvalidInputError
from bcpay.money import exponent, format_amount, from_minor, to_minor


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [("19.9900", "USD", 1999), ("225.0000", "EUR", 22500), ("500", "JPY", 500), ("500.0000", "JPY", 500),
     ("1.234", "KWD", 1234), ("0.001", "BHD", 1), ("0", "USD", 0), (" 7.50 ", "GBP", 750)],
)
def test_bigcommerce_strings_convert_exactly(amount: str, currency: str, minor: int) -> None:
    assert to_minor(amount, currency) == minor


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [("19.999", "USD", "more decimals than USD allows"), ("1.5", "JPY", "more decimals than JPY"),
     ("-1.00", "USD", "negative amount"), ("NaN", "USD", "not a finite amount"),
     ("Infinity", "USD", "not a finite amount"), ("1e40", "USD", "out of range"),
     ("abc", "USD", "not a decimal amount"), ("", "USD", "not a decimal amount"),
     ("99999999999999.99", "USD", "out of range")],
)
def test_unsafe_amounts_are_refused(amount: str, currency: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        to_minor(amount, currency)


def test_float_is_never_accepted() -> None:
    with pytest.raises(InvalidInputError, match="never float"):
        to_minor(19.99, "USD")  # type: ignore[arg-type]


@pytest.mark.parametrize(("code", "exp"), [("JPY", 0), ("KRW", 0), ("USD", 2), ("CNY", 2), ("KWD", 3), ("TND", 3)])
def test_exponents_follow_iso_4217(code: str, exp: int) -> None:
    assert exponent(code) == exp


@pytest.mark.parametrize("code", ["usd", "US", "XAU", "CLF", "XTS", "US1"])
def test_unsupported_or_malformed_currencies_are_refused(code: str) -> None:
    with pytest.raises(InvalidInputError):
        exponent(code)


def test_formatting_uses_the_currency_exponent() -> None:
    assert format_amount(1999, "USD") == "19.99 USD"
    assert format_amount(500, "JPY") == "500 JPY"
    assert format_amount(1234, "KWD") == "1.234 KWD"
    assert from_minor(1999, "USD") == Decimal("19.99")


@given(minor=st.integers(min_value=0, max_value=10**15), currency=st.sampled_from(["USD", "JPY", "KWD", "EUR", "BHD"]))
def test_round_trip_minor_to_decimal_and_back(minor: int, currency: str) -> None:
    assert to_minor(from_minor(minor, currency), currency) == minor
    assert to_minor(f"{from_minor(minor, currency):.4f}", currency) == minor


@given(text=st.text(max_size=40))
def test_arbitrary_text_never_crashes_conversion(text: str) -> None:
    try:
        value = to_minor(text, "USD")
    except InvalidInputError:
        return
    assert isinstance(value, int) and value >= 0
