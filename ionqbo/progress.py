"""A one-line progress bar for people at a terminal; silent on pipes, log files and cron."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Self, TextIO

BAR_WIDTH = 20
LINE_WIDTH = 78  # fits an 80-column terminal; a longer label is shortened
REDRAW_EVERY = 0.1  # seconds: redraw at most ten times a second, however fast records go


def progress_enabled(stream: TextIO) -> bool:
    """Whether a bar may be drawn on ``stream``: only on an open terminal (``isatty()`` true)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


class Progress:
    """``label [#####---------------]  12/40  30%  3.2/s``, redrawn in place with ``\\r``.

    On anything but a terminal it writes nothing at all, so cron mail, journald and redirected
    output stay clean. Use it as a context manager; :meth:`close` ends the line.

    Args:
        stream: where to draw (stderr: stdout carries data).
        total: the number of items, or None when unknown (no bar, no percent).
        label: what is being counted ("purchase orders").
        clock: seconds, monotonic; injectable for tests.
    """

    def __init__(self, stream: TextIO, total: int | None, label: str, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.total = total if total is None or total >= 0 else 0
        self.label = label
        self.count = 0
        self.enabled = progress_enabled(stream)
        self._clock = clock
        self._start = clock()
        self._last_draw: float | None = None
        self._width = 0
        self._closed = False

    def __enter__(self) -> Self:
        self._draw(force=True)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items and redraw (at most every :data:`REDRAW_EVERY` seconds, and at the end)."""
        self.count += n
        done = self.total is not None and self.count >= self.total
        self._draw(force=done)

    def close(self) -> None:
        """Draw the final state and end the line (once; later calls do nothing)."""
        if self._closed:
            return
        if self.enabled:
            self._draw(force=True)
            self._write("\n")
        self._closed = True

    def render(self) -> str:
        """The text of the bar as it would be drawn now (without ``\\r``)."""
        elapsed = self._clock() - self._start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        parts = []
        if self.total is not None:
            fraction = min(self.count / self.total, 1.0) if self.total else 1.0
            filled = round(fraction * BAR_WIDTH)
            parts.append("[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]")
            parts.append(f"{self.count}/{self.total}")
            parts.append(f"{fraction * 100:3.0f}%")
        else:
            parts.append(str(self.count))
        parts.append(f"{rate:.1f}/s")
        tail = "  ".join(parts)
        room = max(LINE_WIDTH - len(tail) - 1, 8)
        label = self.label if len(self.label) <= room else self.label[: room - 3] + "..."
        return f"{label} {tail}"

    def _draw(self, *, force: bool) -> None:
        if not self.enabled or self._closed:
            return
        now = self._clock()
        if not force and self._last_draw is not None and now - self._last_draw < REDRAW_EVERY:
            return
        self._last_draw = now
        line = self.render()
        pad = " " * max(self._width - len(line), 0)  # wipe what a longer previous line left
        self._width = len(line)
        self._write("\r" + line + pad)

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed terminal must not break the sync
            self.enabled = False


class StreamProgress:
    """A ``(stream_name, done)`` callback (``ionqbo.sync.Progress``) drawing one bar per stream.

    ``done`` is the running count for that stream; a new stream name ends the previous bar's line.
    Silent unless ``stream`` is a terminal. Call :meth:`close` (or use ``with``) after the run.
    """

    LABELS = {"parts": "parts", "purchase_orders": "purchase orders"}

    def __init__(self, stream: TextIO, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self._clock = clock
        self._name: str | None = None
        self._bar: Progress | None = None

    def __call__(self, name: str, done: int) -> None:
        """Show that ``done`` records of stream ``name`` are handled."""
        if self._bar is None or name != self._name:
            self.close()
            self._name = name
            self._bar = Progress(self.stream, None, self.LABELS.get(name, name), clock=self._clock)
        self._bar.update(max(done - self._bar.count, 0))

    def close(self) -> None:
        """End the current bar's line (nothing is written on a non-terminal)."""
        if self._bar is not None:
            self._bar.close()
        self._bar = None
        self._name = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
