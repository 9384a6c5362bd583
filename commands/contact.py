"""Contact values as the domain keeps them: emails checked and compared case-insensitively,
phone numbers checked with `phonenumbers` and kept as digits only (E.164 without the `+`)."""

from __future__ import annotations

import re

import phonenumbers

_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_TLD = r"(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})"
_EMAIL = re.compile(rf"^{_LOCAL}@(?:{_LABEL}\.)+{_TLD}$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ().-]{3,30}$")


def normalize_email(value: str) -> str:
    """The address as sent (trimmed), if it is one: ASCII, no spaces, a dotted domain."""
    email = value.strip()
    local, _, _ = email.partition("@")
    if len(email) > 254 or len(local) > 64 or not _EMAIL.match(email):
        msg = "is not a valid email address"
        raise ValueError(msg)
    return email


def email_key(email: str) -> str:
    """What makes two addresses the same one."""
    return email.lower()


def normalize_phone(value: str) -> str:
    """Digits only, with the country code: `+48 512-345-678` -> `48512345678`.

    A number without `+` is read as international too (the panel stores digits only), and
    `00` is the international prefix."""
    raw = value.strip()
    if not _PHONE.fullmatch(raw):
        msg = "is not a valid international phone number"
        raise ValueError(msg)
    digits = re.sub(r"\D", "", raw)
    if not raw.startswith("+") and digits.startswith("00"):
        digits = digits[2:]
    try:
        number = phonenumbers.parse("+" + digits)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        msg = "is not a valid international phone number"
        raise ValueError(msg)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164).lstrip("+")
