"""This machine's clock as ionqbo reads it, and how far it is from ION's and QBO's.

ionqbo never trusts its own clock for what QBO or ION decide: change-data-capture times come from
QBO's answers, ION cursors from ION's ``updatedAt`` values. The local clock still times retries and
backoffs, so a clock far from the services' (read from their ``Date`` headers) is named in the log
and in ``check-mappings``.

Tests shift the clock ionqbo reads (never the machine's) with the environment variable
``IONQBO_TEST_CLOCK_OFFSET`` (seconds, may be negative); it is not a setting for operators.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

log = logging.getLogger("ionqbo.clock")

OFFSET_ENV = "IONQBO_TEST_CLOCK_OFFSET"
# A clock further than this from a service's is named (QBO's CDC overlap is 5 minutes).
SKEW_WARNING = 300.0


def offset() -> float:
    """The test offset in seconds (0 unless IONQBO_TEST_CLOCK_OFFSET is set)."""
    raw = os.environ.get(OFFSET_ENV, "")
    try:
        return float(raw) if raw else 0.0
    except ValueError:
        return 0.0


def utcnow() -> datetime:
    """Now, by this machine's clock (timezone-aware UTC)."""
    return datetime.now(UTC) + timedelta(seconds=offset())


def epoch() -> float:
    """Now, by this machine's clock, in seconds since the epoch."""
    return time.time() + offset()


def skew_from_date(header: str | None) -> float | None:
    """Seconds this machine's clock is ahead of the server's (negative: behind), from a Date header."""
    if not header:
        return None
    try:
        server = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    if server.tzinfo is None:
        server = server.replace(tzinfo=UTC)
    return (utcnow() - server).total_seconds()


def describe_skew(service: str, seconds: float) -> str:
    """``this machine's clock is 400 days ahead of QBO's`` (rounded to a readable unit)."""
    size = abs(seconds)
    if size >= 2 * 86400:
        amount = f"{size / 86400:.0f} days"
    elif size >= 2 * 3600:
        amount = f"{size / 3600:.0f} hours"
    elif size >= 120:
        amount = f"{size / 60:.0f} minutes"
    else:
        amount = f"{size:.0f} seconds"
    return f"this machine's clock is {amount} {'ahead of' if seconds > 0 else 'behind'} {service}'s"


CLOCK_FIX = "set the clock right and keep it so (NTP: `timedatectl set-ntp true`, or chrony)"


class SkewWatch:
    """Keeps the latest skew seen from one service and logs a far one once."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.seconds: float | None = None
        self.date: str | None = None
        self._logged = False

    def note(self, header: str | None) -> None:
        seconds = skew_from_date(header)
        if seconds is None:
            return
        self.seconds, self.date = seconds, header
        if abs(seconds) > SKEW_WARNING and not self._logged:
            self._logged = True
            log.warning("%s (its Date header: %s); ionqbo takes its change times from %s itself, but "
                        "retry times and backoffs use this clock; fix: %s", describe_skew(self.service, seconds),
                        header, self.service, CLOCK_FIX)
