"""Client-side pacing for QBO: sliding windows per company, so that QBO rarely has to throttle us.

QBO's limits (docs/reference/qbo.md section 10): 500 requests/min per company, 10 requests/s per company and
app, 40 batch requests/min per company and app. Our budgets sit a little under them:

- 480/min and 9/s: our clock and Intuit's windows are not aligned, a retry or the request of another
  ionqbo process (``check-mappings`` while a sync runs) may land in the same window, and a 429 costs
  a 60 s wait, far more than the few percent of throughput given up.
- 38 batch/min: the same reasoning; the batch budget is the one a large backfill hits first.

The windows are kept in this process only; two processes pacing themselves independently can still
exceed QBO's limits together, which is what the 429 handling in the client is for.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

# A request counts in a window while ``now - sent <= period``; waiting this much past the edge
# avoids spinning on a clock that lands exactly on it.
_EDGE = 0.001


@dataclass
class Window:
    """At most ``limit`` requests in any ``period`` seconds."""

    limit: int
    period: float
    sent: deque[float] = field(default_factory=deque)

    def wait_needed(self, now: float) -> float:
        """Seconds until one more request fits (0 when it fits now); drops expired entries."""
        while self.sent and now - self.sent[0] > self.period:
            self.sent.popleft()
        if len(self.sent) < self.limit:
            return 0.0
        return self.sent[len(self.sent) - self.limit] + self.period - now + _EDGE


# Budgets, deliberately under QBO's published limits (see the module docstring).
PER_MINUTE = 480
PER_SECOND = 9
BATCH_PER_MINUTE = 38


class RateLimiter:
    """Sliding-window limiter; :meth:`acquire` blocks (through ``sleep``) until a request may go.

    Args:
        per_minute: requests of any kind per 60 s.
        per_second: requests of any kind per second.
        batch_per_minute: batch requests per 60 s (counted in the other windows too).
        clock: monotonic seconds (injectable).
        sleep: waits (injectable; tests advance a fake clock instead).
    """

    def __init__(
        self,
        *,
        per_minute: int = PER_MINUTE,
        per_second: int = PER_SECOND,
        batch_per_minute: int = BATCH_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._all = [Window(per_minute, 60.0), Window(per_second, 1.0)]
        self._batch = [Window(batch_per_minute, 60.0)]
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self.waited = 0.0  # total seconds spent waiting, for reports and tests

    def acquire(self, kind: str = "") -> float:
        """Wait until a request of ``kind`` fits every window, then record it.

        Returns:
            The seconds waited.
        """
        windows = self._all + (self._batch if kind == "batch" else [])
        waited = 0.0
        with self._lock:  # one waiter at a time: requests leave in order
            while True:
                now = self._clock()
                wait = max(w.wait_needed(now) for w in windows)
                if wait <= 0:
                    for w in windows:
                        w.sent.append(now)
                    self.waited += waited
                    return waited
                self._sleep(wait)
                waited += wait
