"""Contact values as the domain keeps them: which emails and phones are valid, and their form."""

from __future__ import annotations

import pytest

from commands.contact import email_key, normalize_email, normalize_phone


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("48512345678", "48512345678"),
        ("+48 512-345-678", "48512345678"),
        ("+48512345678", "48512345678"),
        ("0048 512 345 678", "48512345678"),
        ("+1 (202) 555-0123", "12025550123"),
        ("+45 20 12 34 56", "4520123456"),
        ("+380 50 123 4567", "380501234567"),
    ],
)
def test_a_valid_phone_is_kept_as_digits_with_its_country_code(sent: str, kept: str) -> None:
    assert normalize_phone(sent) == kept


@pytest.mark.parametrize(
    "sent",
    ["5547778321", "123", "+48 512 345 67", "48512345678x", "phone", "++48512345678", "+", ""],
)
def test_an_invalid_phone_is_refused(sent: str) -> None:
    with pytest.raises(ValueError, match="phone number"):
        normalize_phone(sent)


@pytest.mark.parametrize(
    "sent",
    [
        "anna.nowak@example.com",
        "A+tag@Sub.Example.co.uk",
        "o'brien@example.ie",
        "x@example.xn--p1ai",
    ],
)
def test_a_valid_email_is_kept_as_sent(sent: str) -> None:
    assert normalize_email(f"  {sent} ") == sent


@pytest.mark.parametrize(
    "sent",
    [
        "ann@",
        "@example.com",
        "ann",
        "123456789",
        "123@456.789",
        "ann nowak@example.com",
        "ann@example",
        "ann..nowak@example.com",
        "ann@-example.com",
        "ann@example.c",
        "ann@exa mple.com",
        "ąna@example.com",
        f"{'a' * 65}@example.com",
        f"a@{'b' * 250}.com",
    ],
)
def test_an_invalid_email_is_refused(sent: str) -> None:
    with pytest.raises(ValueError, match="email"):
        normalize_email(sent)


def test_emails_differing_only_in_case_are_one_address() -> None:
    assert email_key("Anna.Nowak@Example.COM") == email_key("anna.nowak@example.com")
