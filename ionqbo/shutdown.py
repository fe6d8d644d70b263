"""SIGTERM during a sync: stop within seconds, with what QBO confirmed saved.

systemd sends SIGTERM on `systemctl stop` and when a unit's time is up (then SIGKILL after
``TimeoutStopSec``). While a sync runs, :func:`handle_sigterm` turns the signal into
:class:`Terminated`, raised where the run is, so that the sync saves its state and ledger and
ends. A write whose answer is being awaited or recorded runs in a :func:`critical` section: the
signal waits for it (at most ``grace`` seconds, then it is raised anyway), so a write QBO confirmed
is recorded in the ledger before the run ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class Terminated(BaseException):
    """The process was asked to stop (SIGTERM). A BaseException, so that no ``except Exception`` eats it."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class _State:
    depth = 0
    grace = 7.0
    pending: int | None = None
    installed = False


_state = _State()


def _raise_now(signum: int) -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)
    raise Terminated(signum)


def _on_sigterm(signum: int, _frame: FrameType | None) -> None:
    first = _state.pending is None
    _state.pending = signum
    if _state.depth == 0:
        _raise_now(signum)
    if first:  # in a critical section: it ends soon, or the grace timer raises anyway
        signal.setitimer(signal.ITIMER_REAL, max(_state.grace, 0.01))


def _on_alarm(_signum: int, _frame: FrameType | None) -> None:
    if _state.pending is not None:
        _raise_now(_state.pending)


def ignore_further() -> None:
    """The run is stopping and saving: a second SIGTERM must not cut the save."""
    _state.depth += 1
    signal.setitimer(signal.ITIMER_REAL, 0)


def requested() -> bool:
    """True once SIGTERM arrived."""
    return _state.pending is not None


@contextlib.contextmanager
def handle_sigterm() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    previous_alarm = signal.signal(signal.SIGALRM, _on_alarm)
    _state.installed, _state.pending, _state.depth = True, None, 0
    try:
        yield
    finally:
        _state.depth = 0
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGALRM, previous_alarm)
        _state.installed = False


@contextlib.contextmanager
def critical(grace: float = 7.0) -> Iterator[None]:
    """A section SIGTERM does not cut, unless it lasts ``grace`` seconds after the signal came.

    A section entered after the signal came raises at once: a stopping run starts nothing new.
    """
    if not _state.installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    if _state.pending is not None and _state.depth == 0:
        _raise_now(_state.pending)
    _state.depth += 1
    outer_grace, _state.grace = _state.grace, grace if _state.depth == 1 else _state.grace
    try:
        yield
    finally:
        _state.depth -= 1
        _state.grace = outer_grace
    if _state.depth == 0 and _state.pending is not None:
        _raise_now(_state.pending)
