"""One error tree; every error knows the exit code it ends a command with (the exit codes in the README)."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Process exit codes: part of the contract other tools rely on."""

    OK = 0
    BUG = 1  # unexpected error: a traceback with --debug, one line otherwise
    USAGE = 2  # usage or settings error
    PARTIAL = 3  # some records could not be synced; they are queued
    AUTH = 4  # QBO consent needed again, or ION rejected the API key
    UNAVAILABLE = 5  # ION or QBO unavailable after retries; nothing lost
    LOCKED = 75  # EX_TEMPFAIL: another sync holds the lock


class IonqboError(Exception):
    """Root of every error ionqbo raises on purpose."""

    exit_code: ExitCode = ExitCode.BUG

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  fix: {self.hint}"
        return self.message


# ---- usage and settings ---------------------------------------------------------


class ConfigError(IonqboError):
    """Settings are missing or invalid; fix the environment or env file."""

    exit_code = ExitCode.USAGE

    def __init__(self, problems: list[str], *, hint: str | None = None) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = f"invalid settings: {self.problems[0]}"
        else:
            message = "invalid settings:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message, hint=hint)


class UsageError(IonqboError):
    """The command line asks for something that cannot be done."""

    exit_code = ExitCode.USAGE


# ---- authorization ----------------------------------------------------------------


class AuthError(IonqboError):
    """Credentials were rejected; a person must act (reconnect, new API key)."""

    exit_code = ExitCode.AUTH


class ConsentRequiredError(AuthError):
    """QBO refresh token is gone or invalid; run `ionqbo connect`."""


class IonAuthError(AuthError):
    """ION rejected the API key (client id / secret)."""


class WrongCompanyError(AuthError):
    """The token store belongs to another QBO company or environment."""


# ---- transport ----------------------------------------------------------------------


class ApiError(IonqboError):
    """A remote API answered with an error."""

    exit_code = ExitCode.UNAVAILABLE

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        detail: str | None = None,
        tid: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code
        self.detail = detail
        self.tid = tid


class RetriableApiError(ApiError):
    """Transient failure (429, 5xx, connection reset, timeout); retry with backoff."""


class UnavailableError(RetriableApiError):
    """A service stayed unavailable after every retry; the next run resumes."""


class DeadlineReachedError(UnavailableError):
    """The run reached IONQBO_RUN_DEADLINE with work left; what was done is saved (exit 5)."""


class FatalApiError(ApiError):
    """The request itself is wrong; retrying the same request cannot help."""

    exit_code = ExitCode.BUG


class BadResponseError(FatalApiError):
    """ION or QBO answered with a body that is not JSON, is cut short, or has not the documented shape.

    Nothing is done on the strength of such an answer, so nothing is lost: exit 5, the next run
    tries again (a proxy's error page, a truncated body and a misrouted URL all look like this).
    """

    exit_code = ExitCode.UNAVAILABLE


class PaginationLoopError(FatalApiError):
    """The API returned the same page cursor twice; paging would never end."""


class IonGraphQLError(FatalApiError):
    """ION answered a GraphQL request with an `errors` array."""

    def __init__(self, message: str, *, errors: list[Any] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


# ---- records ---------------------------------------------------------------------------


class RecordError(IonqboError):
    """One record cannot be synced; it is queued and the run goes on."""

    exit_code = ExitCode.PARTIAL
    retryable = False  # parked until a person acts, or retried on a schedule
    code = "record"

    def __init__(
        self,
        message: str,
        *,
        kind: str = "",
        ion_id: str = "",
        field: str | None = None,
        hint: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.kind = kind
        self.ion_id = ion_id
        self.field = field
        if code is not None:
            self.code = code


class MalformedRecordError(RecordError):
    """ION returned a record whose fields cannot be read; fix it in ION."""

    code = "malformed"


class MappingError(RecordError):
    """A record refers to something QBO does not have, or breaks a QBO rule; fix the mapping."""

    code = "mapping"


class QboRejectedError(RecordError):
    """QBO refused the write of this record (validation); the error names why."""

    code = "qbo_rejected"


class TransientRecordError(RecordError):
    """The record failed for a passing reason; it is retried on a schedule."""

    retryable = True
    code = "transient"


# ---- state -----------------------------------------------------------------------------


class LockedError(IonqboError):
    """Another sync holds the lock; nothing was done."""

    exit_code = ExitCode.LOCKED


class StateError(IonqboError):
    """The state file cannot be read or written."""

    exit_code = ExitCode.BUG


class StateDirError(StateError):
    """The state directory is read-only, missing and cannot be made, or not a directory: a setting."""

    exit_code = ExitCode.USAGE


class DiskFullError(StateError):
    """The disk under the state directory is full; it may recover (exit 5), nothing was half-written."""

    exit_code = ExitCode.UNAVAILABLE
