"""The project's one error model.

Every failure a person or a scheduler should be told about is a ``HarvestError``. Its kind
(one of the classes below) says what the caller can do about it, as an exit code for the
command line and an HTTP status for the API; each package's own errors (``LakeError``,
``SyncError``, ``RecipeError`` ...) derive from one kind and add where they come from.
The command line catches ``HarvestError`` once (``harvest.cli``), the API once
(``harvest.service.app``). It lives here, in the lowest package, so every package can
raise one.

An error whose kind differs from its family's puts the kind first, so that its codes win
and ``except FamilyError`` still catches it::

    class ProjectMismatchError(ConfigurationError, SyncError): ...

Exit codes follow sysexits.h where one fits (69 EX_UNAVAILABLE, 75 EX_TEMPFAIL,
78 EX_CONFIG); 2 is also what Click exits with on a bad flag.
"""

from __future__ import annotations

from typing import ClassVar


class HarvestError(Exception):
    """A failure with a message for a person; raise one of the kinds below, not this."""

    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500
    # what to do next, added to the message when the message does not say it already
    hint: str = ""

    def __init__(self, message: str = "", *, hint: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        text = super().__str__()
        if self.hint and self.hint not in text:
            return f"{text}: {self.hint}" if text else self.hint
        return text


class CheckFailedError(HarvestError):
    """A check ran and found a difference: damage, a leak, a rebuild that differs."""

    exit_code = 1
    http_status = 409


class InvalidInputError(HarvestError):
    """The request itself cannot be done as asked: a bad value, a missing choice."""

    exit_code = 2
    http_status = 422


class NotFoundError(InvalidInputError):
    """It names a source, table, dataset, version or model that does not exist."""

    http_status = 404


class ConflictError(InvalidInputError):
    """A sound request the lake's present state refuses: no labels yet, a table not cut."""

    http_status = 409


class GaveUpError(HarvestError):
    """A crawl ended but gave up on more pages than its recipe allows, or stalled."""

    exit_code = 3
    http_status = 502


class UnavailableError(HarvestError):
    """A service it needs does not answer (Label Studio, Redis, MLflow, the site): retry
    later."""

    exit_code = 69
    http_status = 503


class LockedError(HarvestError):
    """Another run holds the source (its lock, or a queued run): busy, retry once it has
    finished."""

    exit_code = 75
    http_status = 409


class ConfigurationError(HarvestError):
    """The configuration, a recipe or the installation is invalid: fix it, then rerun."""

    exit_code = 78
    http_status = 422


# the kinds, each with the exit code and status every error of its kind carries
KINDS: tuple[type[HarvestError], ...] = (
    CheckFailedError,
    InvalidInputError,
    NotFoundError,
    ConflictError,
    GaveUpError,
    UnavailableError,
    LockedError,
    ConfigurationError,
)
