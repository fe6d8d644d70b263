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
    re.compile(r"(?i)(bearer|token|basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
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
    """

    tries: int = 5
    base: float = 0.5
    cap: float = 30.0
    throttle_wait: float = 60.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def backoff(self, attempt: int, response: requests.Response | None = None) -> float:
        """Seconds to wait before attempt number ``attempt + 1`` (``attempt`` counts from 1)."""
        if response is not None:
            after = retry_after(response)
            if after is not None:
                return min(after, max(self.cap, self.throttle_wait))
            if response.status_code == 429:
                return self.throttle_wait
        ceiling = min(self.cap, self.base * (2.0 ** (attempt - 1)))
        return float(ceiling / 2 + self.rng.uniform(0, ceiling / 2))


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
    return max(0.0, when.timestamp() - time.time())


# ---- session --------------------------------------------------------------------------------


class Session(requests.Session):
    """A requests Session with a default timeout, a User-Agent and a request counter."""

    def __init__(self, *, timeout: float = 60.0, name: str = "http") -> None:
        super().__init__()
        self.timeout = timeout
        self.name = name
        self.request_count = 0
        self.counts: dict[str, int] = {}
        self._count_lock = threading.Lock()
        self.headers["User-Agent"] = USER_AGENT

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        kind = kwargs.pop("count_as", None)
        with self._count_lock:
            self.request_count += 1
            if kind:
                self.counts[kind] = self.counts.get(kind, 0) + 1
        return super().request(method, url, *args, **kwargs)


def make_session(*, timeout: float = 60.0, name: str = "http") -> Session:
    """Build the session every client uses (one connection pool per service)."""
    return Session(timeout=timeout, name=name)


def send_with_retry(
    send: Callable[[], requests.Response],
    policy: RetryPolicy,
    *,
    what: str,
    retry_statuses: Iterable[int] = RETRY_STATUSES,
    retry_exceptions: tuple[type[BaseException], ...] = RETRY_EXCEPTIONS,
    on_retry: Callable[[int, float, str], None] | None = None,
) -> requests.Response:
    """Call ``send`` until it returns a response whose status is not retryable, or tries run out.

    Only call this for safe requests: reads, token requests, and writes carrying an idempotency
    key created outside ``send`` (R6).

    Returns:
        The last response (which may still carry a retryable status when tries ran out).

    Raises:
        The last transport exception when every try failed without a response.
    """
    statuses = frozenset(retry_statuses)
    attempt = 0
    while True:
        attempt += 1
        try:
            response = send()
        except retry_exceptions as exc:
            if attempt >= policy.tries:
                raise
            wait = policy.backoff(attempt)
            reason = f"{type(exc).__name__}: {redact(str(exc))[:200]}"
        else:
            if response.status_code not in statuses or attempt >= policy.tries:
                return response
            wait = policy.backoff(attempt, response)
            reason = f"HTTP {response.status_code}"
        log.warning("%s failed (%s); try %d of %d in %.1fs", what, reason, attempt + 1, policy.tries, wait)
        if on_retry is not None:
            on_retry(attempt, wait, reason)
        policy.sleep(wait)


def excerpt(response: requests.Response, limit: int = 300) -> str:
    """A short, redacted excerpt of a response body for error messages (R3)."""
    try:
        text = response.text
    except (UnicodeDecodeError, requests.RequestException):  # a broken body must not hide the error
        return "<unreadable body>"
    text = " ".join(text.split())
    return redact(text[:limit] + ("..." if len(text) > limit else ""))


def describe(response: requests.Response) -> str:
    """`503 Service Unavailable for POST https://host/path: <body excerpt>`, redacted (R3)."""
    method = response.request.method if response.request is not None else "?"
    url = redact((response.url or "").split("?")[0])
    return f"{response.status_code} {response.reason or ''} for {method} {url}: {excerpt(response)}".replace("  ", " ")
