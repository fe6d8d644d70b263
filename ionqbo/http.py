"""The one HTTP session factory: timeouts on every request, one retry policy, redaction of secrets."""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from ionqbo import __version__
from ionqbo.errors import DeadlineReachedError, UnavailableError

log = logging.getLogger("ionqbo.http")

USER_AGENT = f"ionqbo/{__version__} (+https://github.com/ionqbo/ionqbo)"

# Statuses worth another try (R5): 429 is throttling (QBO, ION); 502/503/504 are gateway and
# availability failures (ION answers 502 after a 30 s gateway timeout, ion-api.md section 3.1).
# 500 is retried only where the caller says so: QBO says "resubmit the request once".
RETRY_STATUSES = frozenset({429, 502, 503, 504})

# Exceptions that mean the request may not have been processed: retried for safe requests only
# (reads, token calls, and writes that carry an idempotency key).
RETRY_EXCEPTIONS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


# ---- redaction ------------------------------------------------------------------------------

_PATTERNS = [
    # A credential after "Bearer", "Basic" or "token": 8+ token characters with at least one digit or
    # token punctuation, or 20+ letters. An ordinary word ("the token endpoint", "token expired") is
    # not one: redaction must never eat words (known secret values are replaced whatever they look like).
    re.compile(r"(?i)\b(bearer|token|basic)\s+(?:(?=[A-Za-z0-9._~+/=-]*[0-9._~+/=])[A-Za-z0-9._~+/=-]{8,}"
               r"|[A-Za-z]{20,})"),
    re.compile(
        r"(?i)((?<![\w-])(?:access_token|refresh_token|client_secret|id_token|code|password)[\"']?\s*[:=]\s*[\"']?)"
        r"[^\s\"'&,}]+"
    ),
]


class Redactor:
    """Replaces known secret values and secret-shaped fragments with ``***``."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, *values: str | None) -> None:
        """Register values (tokens, client secrets) that must never be printed."""
        with self._lock:
            for value in values:
                if value and len(value) >= 4:
                    self._secrets.add(value)

    def __call__(self, text: str) -> str:
        if not text:
            return text
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, "***")
        text = _PATTERNS[0].sub(lambda m: f"{m.group(1)} ***", text)
        return _PATTERNS[1].sub(lambda m: f"{m.group(1)}***", text)


redact = Redactor()


class RedactingFilter(logging.Filter):
    """A logging filter that runs every message (and its arguments) through :data:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string must not lose the line
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        for key, value in list(record.__dict__.items()):
            if key.startswith("ionqbo_") and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


# ---- the run's deadline and the give-up budget -------------------------------------------------

# A request that fails for availability reasons (5xx, a dropped connection, a timeout) is given up
# once another try could not end within this many seconds of its first try (waits and the last
# try's duration counted), so that a run against a service that is down ends within 90 s.
GIVE_UP_AFTER = 75.0
# Throttling (429, ThrottleExceeded) waits the 60 s Intuit asks for: two such waits, then give up
# (a run against a QBO that throttles every request ends within 150 s).
THROTTLE_GIVE_UP_AFTER = 130.0
# Seconds to wait for a TCP connection (the read timeout is IONQBO_HTTP_TIMEOUT).
CONNECT_TIMEOUT = 10.0


class Deadline:
    """The run's deadline (IONQBO_RUN_DEADLINE): no wait starts that would end past it, and every
    request's connect and read timeouts are cut to what is left of it.

    Args:
        seconds: the run's length; None: no deadline.
        clock: monotonic seconds (injectable).
    """

    def __init__(self, seconds: float | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.started = clock()

    def remaining(self) -> float:
        if self.seconds is None:
            return float("inf")
        return self.seconds - (self.clock() - self.started)

    def expired(self) -> bool:
        return self.remaining() <= 0

    def error(self, doing: str) -> DeadlineReachedError:
        seconds = f"{self.seconds:g}" if self.seconds is not None else "?"
        msg = (f"the run reached its {seconds} s deadline (IONQBO_RUN_DEADLINE) {doing}; what was done is "
               "saved and the next run resumes")
        hint = ("nothing to do if it happens once; if every run ends so, raise IONQBO_RUN_DEADLINE (a backfill: "
                "`ionqbo sync --since ... --deadline 3600`) or check why ION or QBO answers slowly")
        return DeadlineReachedError(msg, hint=hint)


_deadline = Deadline(None)


def run_deadline() -> Deadline:
    """The deadline of the run in progress (none unless :func:`start_run_deadline` was called)."""
    return _deadline


def start_run_deadline(seconds: float | None, *, clock: Callable[[], float] = time.monotonic) -> Deadline:
    """Start the run's deadline now (``None`` or ``0``: no deadline); returns it."""
    global _deadline  # one run per process; every client of the run shares it
    _deadline = Deadline(seconds or None, clock=clock)
    return _deadline


class Breaker:
    """Once a request to a service has used up its tries for availability reasons, the run sends that
    service nothing more: every later request fails at once with the same error (exit 5)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.error: UnavailableError | None = None

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def trip(self, what: str, reason: str, *, tries: int, seconds: float, status: int | None = None,
             tid: str | None = None, code: str | None = None, unreachable: bool = False) -> UnavailableError:
        """Record that the service is down; returns the error to raise (the first one stays)."""
        if self.error is None and run_deadline().remaining() <= 1.0:
            seconds_s = f"{run_deadline().seconds:g}"
            msg = (f"the run reached its {seconds_s} s deadline (IONQBO_RUN_DEADLINE) waiting for {self.service} "
                   f"({what}: {reason}); what was done is saved and the next run resumes")
            hint = ("nothing to do if it happens once; if every run ends so, check why "
                    f"{self.service} answers slowly, or raise IONQBO_RUN_DEADLINE")
            self.error = DeadlineReachedError(msg, status=status, tid=tid, code=code, hint=hint)
            log.error("the run's deadline has passed; no further request goes to %s", self.service)
        if self.error is None:
            where = f", intuit_tid={tid}" if tid and self.service == "QBO" else (f", trace id {tid}" if tid else "")
            state = "unreachable" if unreachable else "unavailable"
            msg = (f"{self.service} is {state} after {tries} {'try' if tries == 1 else 'tries'} in {seconds:.0f} s "
                   f"({what}: {reason}{where}); nothing more was sent to {self.service} in this run, what was "
                   "done is saved and the next run resumes")
            hint = _UNAVAILABLE_HINTS.get(self.service, "nothing to do if it passes; if it lasts, check the service")
            self.error = UnavailableError(msg, status=status, tid=tid, code=code, hint=hint)
            log.error("%s is unavailable; no further request goes to it in this run", self.service)
        return self.error


_UNAVAILABLE_HINTS = {
    "QBO": "nothing to do if it passes; if it lasts, see https://status.developer.intuit.com and the network "
           "between this machine and QBO_BASE_URL",
    "ION": "nothing to do if it passes; if it lasts, check ION's status with First Resonance and the network "
           "between this machine and ION_API_URL",
}


# ---- retry policy ---------------------------------------------------------------------------


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter, a cap, Retry-After honoured, an injectable sleep.

    Args:
        tries: total attempts, the first included.
        base: seconds before the second attempt (doubled each time, before jitter).
        cap: the longest single wait.
        throttle_wait: the wait after a throttle (429) that carries no Retry-After.
        sleep: injectable, so tests take no time.
        give_up_after: no further try when it could not end within this many seconds of the first
            (the wait and the last try's duration counted); throttles use ``throttle_give_up_after``.
        clock: monotonic seconds for that budget (injectable; advance it in ``sleep``).
    """

    tries: int = 5
    base: float = 0.5
    cap: float = 30.0
    throttle_wait: float = 60.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    give_up_after: float = GIVE_UP_AFTER
    throttle_give_up_after: float = THROTTLE_GIVE_UP_AFTER
    clock: Callable[[], float] = time.monotonic

    def backoff(self, attempt: int, response: requests.Response | None = None) -> float:
        """Seconds to wait before attempt number ``attempt + 1`` (``attempt`` counts from 1)."""
        if response is not None:
            after = retry_after(response)
            if after is not None:
                return after
            if response.status_code == 429:
                return self.throttle_wait
        ceiling = min(self.cap, self.base * (2.0 ** (attempt - 1)))
        return float(ceiling / 2 + self.rng.uniform(0, ceiling / 2))

    def budget(self) -> Attempts:
        """Start counting one logical request's tries and time."""
        return Attempts(self)


class Attempts:
    """The tries of one logical request: whether one more fits the budget and the run's deadline."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.started = policy.clock()
        self.try_started = self.started
        self.count = 0

    def begin(self) -> int:
        """A try starts; returns its number (from 1)."""
        self.count += 1
        self.try_started = self.policy.clock()
        return self.count

    def elapsed(self) -> float:
        return self.policy.clock() - self.started

    def allows(self, wait: float, *, throttled: bool = False, tries: int | None = None) -> bool:
        """True when another try may follow a wait of ``wait`` seconds."""
        if self.count >= (tries if tries is not None else self.policy.tries):
            return False
        now = self.policy.clock()
        last = now - self.try_started
        budget = self.policy.throttle_give_up_after if throttled else self.policy.give_up_after
        if now - self.started + wait + last > budget:
            return False
        return run_deadline().remaining() > wait


def retry_after(response: requests.Response) -> float | None:
    """The Retry-After header in seconds (delta or HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    # Against the server's own Date header where there is one: this machine's clock may be off.
    try:
        reference = parsedate_to_datetime(response.headers.get("Date", "")).timestamp()
    except (TypeError, ValueError, IndexError):
        reference = time.time()
    return max(0.0, when.timestamp() - reference)


# ---- session --------------------------------------------------------------------------------


class Session(requests.Session):
    """A requests Session with a default timeout, a User-Agent and a request counter.

    A ``bounded`` session (ION's and QBO's) cuts every request's connect and read timeouts to what is
    left of the run's deadline, and sends nothing once it has passed.
    """

    def __init__(self, *, timeout: float = 60.0, name: str = "http", bounded: bool = False) -> None:
        super().__init__()
        self.timeout = timeout
        self.name = name
        self.bounded = bounded
        self.request_count = 0
        self.counts: dict[str, int] = {}
        self._count_lock = threading.Lock()
        self.headers["User-Agent"] = USER_AGENT

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        if self.bounded:
            kwargs["timeout"] = _bounded_timeout(kwargs["timeout"], self.name)
        kind = kwargs.pop("count_as", None)
        with self._count_lock:
            self.request_count += 1
            if kind:
                self.counts[kind] = self.counts.get(kind, 0) + 1
        return super().request(method, url, *args, **kwargs)


def _bounded_timeout(timeout: Any, name: str) -> tuple[float, float]:
    read = float(timeout[1] if isinstance(timeout, tuple) else timeout)
    remaining = run_deadline().remaining()
    if remaining <= 0:
        raise run_deadline().error(f"before a request to {name.upper()}")
    read = min(read, max(remaining, 0.5))
    return (min(CONNECT_TIMEOUT, read), read)


def make_session(*, timeout: float = 60.0, name: str = "http", bounded: bool = False) -> Session:
    """Build the session every client uses (one connection pool per service)."""
    return Session(timeout=timeout, name=name, bounded=bounded)


def send_with_retry(
    send: Callable[[], requests.Response],
    policy: RetryPolicy,
    *,
    what: str,
    retry_statuses: Iterable[int] = RETRY_STATUSES,
    retry_exceptions: tuple[type[BaseException], ...] = RETRY_EXCEPTIONS,
    on_retry: Callable[[int, float, str], None] | None = None,
    attempts: Attempts | None = None,
) -> requests.Response:
    """Call ``send`` until it returns a response whose status is not retryable, or tries run out.

    Tries also stop when another could not end within the policy's give-up budget, or a wait would
    end past the run's deadline. Only call this for safe requests: reads, token requests, and writes
    carrying an idempotency key created outside ``send`` (R6).

    Returns:
        The last response (which may still carry a retryable status when tries ran out).

    Raises:
        The last transport exception when every try failed without a response.
    """
    statuses = frozenset(retry_statuses)
    tries = attempts if attempts is not None else policy.budget()
    while True:
        attempt = tries.begin()
        try:
            response = send()
        except retry_exceptions as exc:
            wait = policy.backoff(attempt)
            if not tries.allows(wait):
                raise
            reason = f"{type(exc).__name__}: {redact(str(exc))[:200]}"
        else:
            if response.status_code not in statuses:
                return response
            wait = policy.backoff(attempt, response)
            if not tries.allows(wait, throttled=response.status_code == 429):
                return response
            reason = f"HTTP {response.status_code}"
        log.warning("%s failed (%s); try %d of %d in %.1fs", what, reason, attempt + 1, policy.tries, wait)
        if on_retry is not None:
            on_retry(attempt, wait, reason)
        policy.sleep(wait)


_TAG = re.compile(r"(?s)<(script|style)\b.*?</\1\s*>|<!--.*?-->|<[^>]*>")
_TITLE = re.compile(r"(?is)<title[^>]*>(.*?)</title>")


def excerpt(response: requests.Response, limit: int = 300) -> str:
    """A short, redacted excerpt of a response body for error messages (R3).

    An HTML page (a gateway's or a proxy's error page) is cut to its title, or its first words
    without markup, at most 120 characters.
    """
    try:
        text = response.text
    except (UnicodeDecodeError, requests.RequestException):  # a broken body must not hide the error
        return "<unreadable body>"
    ctype = (response.headers.get("Content-Type") or "").lower()
    if "html" in ctype or text.lstrip()[:15].lower().startswith(("<!doctype html", "<html")):
        title = _TITLE.search(text)
        text = _TAG.sub(" ", title.group(1) if title else text)
        text = "HTML page: " + " ".join(text.split())
        limit = min(limit, 120)
    text = " ".join(text.split())
    return redact(text[:limit] + ("..." if len(text) > limit else ""))


def describe(response: requests.Response) -> str:
    """`503 Service Unavailable for POST https://host/path: <body excerpt>`, redacted (R3)."""
    method = response.request.method if response.request is not None else "?"
    url = redact((response.url or "").split("?")[0])
    return f"{response.status_code} {response.reason or ''} for {method} {url}: {excerpt(response)}".replace("  ", " ")
