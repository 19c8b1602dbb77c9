"""One error hierarchy for the whole service.

Every error the service reports to a client is a `GlowingFiestaError` with a stable
`code` (the SPEC's envelope code), a sentence for people and optional per-field
`details`. Errors know nothing of HTTP: `api/errors.py` maps codes to statuses.

    GlowingFiestaError
    ├── BadRequest            body is not JSON or not the expected shape at all
    ├── Unauthenticated       no key, unknown key, revoked key
    ├── Forbidden             key lacks the scope
    ├── NotFound              unknown metric or route
    ├── TypeConflict          counter write to a value metric or the reverse
    ├── PayloadTooLarge       body or batch over its limit
    ├── UnsupportedMediaType  JSON endpoint called with another content type
    │   └── UnsupportedEncoding  body in a content coding the service cannot decode
    ├── ValidationError       well-formed input with invalid fields
    ├── RateLimited           key over its limit; carries retry_after seconds
    └── Unavailable           storage or queue down, or backpressure; carries retry_after
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class Detail:
    """What is wrong with one field, optionally of one item of a batch."""

    message: str
    field: str | None = None
    index: int | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.index is not None:
            out["index"] = self.index
        if self.field is not None:
            out["field"] = self.field
        out["message"] = self.message
        return out


class GlowingFiestaError(Exception):
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, details: list[Detail] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class BadRequest(GlowingFiestaError):
    code = "bad_request"


class Unauthenticated(GlowingFiestaError):
    code = "unauthenticated"


class Forbidden(GlowingFiestaError):
    code = "forbidden"


class NotFound(GlowingFiestaError):
    code = "not_found"


class TypeConflict(GlowingFiestaError):
    code = "type_conflict"


class PayloadTooLarge(GlowingFiestaError):
    code = "payload_too_large"


class UnsupportedMediaType(GlowingFiestaError):
    code = "unsupported_media_type"


class UnsupportedEncoding(UnsupportedMediaType):
    """A 415 whose answer names the codings that are understood (RFC 9110 §15.5.16)."""

    accepted: ClassVar[str] = "gzip, deflate, identity"


class ValidationError(GlowingFiestaError):
    code = "validation_error"


class _RetryLater(GlowingFiestaError):
    def __init__(self, message: str, retry_after: int, details: list[Detail] | None = None) -> None:
        super().__init__(message, details)
        self.retry_after = max(1, retry_after)


class RateLimited(_RetryLater):
    code = "rate_limited"


class Unavailable(_RetryLater):
    code = "unavailable"
