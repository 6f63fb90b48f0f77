"""The error tree adapters translate vendor answers into, once, at the boundary.

    DeliveryError
    ├── TransientError          retry later with backoff
    │   ├── RateLimited         retry after `retry_after` seconds (quota, 429, 10024 …)
    │   ├── Unavailable         5xx, connection refused, timeout on an idempotent call
    │   └── AuthExpired         a token expired; refresh and retry
    ├── PermanentError          never retried automatically; the reason is shown to ops
    │   ├── ContentRejected     the remote refused this content (too long, forbidden markup …)
    │   ├── AuthInvalid         credentials are wrong or revoked: ops must act
    │   ├── NotFound            the remote object does not exist
    │   └── ManualActionRequired the API cannot do it: a person must (e.g. delete a Weibo post)
    └── OutcomeUnknown          a non-idempotent call may or may not have taken effect

Adapters raise; they never return False and never swallow an error.
"""
from __future__ import annotations


class DeliveryError(Exception):
    """Base of every classified channel error. `code` is the vendor's code when there is one."""

    def __init__(self, message: str, *, code: str | int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}" if self.code is not None else self.message


class TransientError(DeliveryError):
    """Worth retrying with backoff."""


class RateLimited(TransientError):
    """The remote asked us to wait; `retry_after` is in seconds."""

    def __init__(self, message: str, *, retry_after: float, code: str | int | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class Unavailable(TransientError):
    """The remote is down, overloaded or did not answer an idempotent call."""


class AuthExpired(TransientError):
    """A short-lived token expired; the adapter refreshes it on the next attempt."""


class PermanentError(DeliveryError):
    """Retrying will not help; a person must act."""


class ContentRejected(PermanentError):
    """The content breaks a rule of the channel."""


class AuthInvalid(PermanentError):
    """Credentials are wrong, revoked or lack permission."""


class NotFound(PermanentError):
    """The remote object is gone."""


class ManualActionRequired(PermanentError):
    """The channel's API cannot do this; a person must, at `url` if given. Not a failure of ours:
    the delivery waits in `manual` until ops confirm it is done."""

    def __init__(self, message: str, *, url: str | None = None, code: str | int | None = None) -> None:
        super().__init__(message, code=code)
        self.url = url


class OutcomeUnknown(DeliveryError):
    """A non-idempotent call timed out or broke after sending: it may have taken effect."""
