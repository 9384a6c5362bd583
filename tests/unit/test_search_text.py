"""What a customer's `phrase` is searched in: the full name on one line, then email, phone and
note one per line, lowercased; missing fields leave no empty line."""

from __future__ import annotations

import pytest

from events.customer import CustomerState
from projections.customers import search_text


def customer(**personal: str | None) -> CustomerState:
    return CustomerState("t1", "c1", 1, dict(personal), "regular", "active")


@pytest.mark.parametrize(
    ("personal", "expected"),
    [
        (
            {
                "firstName": "Anna",
                "lastName": "Nowak",
                "email": "Anna@X.pl",
                "phone": "48512",
                "note": "VIP",
            },
            "anna nowak\nanna@x.pl\n48512\nvip",
        ),
        ({"firstName": "Anna", "lastName": None, "email": "a@x.pl"}, "anna\na@x.pl"),
        ({"firstName": "", "lastName": "Nowak"}, "nowak"),
        ({"firstName": None, "lastName": None, "phone": "48512"}, "48512"),
        ({"note": "Only a note"}, "only a note"),
        ({}, ""),
    ],
)
def test_the_search_text_has_the_name_on_one_line_and_no_empty_lines(
    personal: dict[str, str | None], expected: str
) -> None:
    assert search_text(customer(**personal)) == expected
