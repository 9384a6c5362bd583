"""Domain errors. `beeoclock.errors` maps each to its HTTP status in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str
    detail: str | None = None


class DomainError(Exception):
    """Base of the errors a command can end in."""

    def __init__(self, message: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or []


class NotFound(DomainError):
    """The entity never existed in this tenant."""


class Conflict(DomainError):
    """A duplicate value, an id already taken, or a stale expected version."""


class InvalidCommand(DomainError):
    """The request is malformed (400)."""


class RuleViolation(DomainError):
    """A valid request that a business rule refuses (422)."""


class PayloadTooLarge(DomainError):
    """A body or an upload over its size or pixel limit (413)."""


class UnsupportedMedia(DomainError):
    """An upload that is not a real image of an accepted format (415)."""
