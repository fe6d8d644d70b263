"""Tests for ionqbo.progress: silent on non-terminals, a redrawn bar on a terminal."""

from __future__ import annotations

import io

import pytest

from ionqbo.progress import Progress, progress_enabled


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Closed(io.StringIO):
    def isatty(self) -> bool:
        raise ValueError("I/O operation on closed file")


@pytest.mark.parametrize(("stream", "expected"), [
    pytest.param(io.StringIO(), False, id="pipe-or-file"),
    pytest.param(FakeTty(), True, id="terminal"),
    pytest.param(Closed(), False, id="closed"),
    pytest.param(object(), False, id="no-isatty"),
])
def test_progress_enabled(stream, expected):
    assert progress_enabled(stream) is expected


@pytest.mark.parametrize("total", [3, None])
def test_nothing_at_all_on_a_non_tty(total):
    out = io.StringIO()
    with Progress(out, total, "purchase orders") as bar:
        for _ in range(3):
            bar.update()
    assert out.getvalue() == ""
    assert bar.count == 3


def test_draws_on_a_tty_with_count_percent_and_rate():
    out, clock = FakeTty(), Clock()
    with Progress(out, 4, "purchase orders", clock=clock) as bar:
        clock.now += 1.0
        bar.update()
        clock.now += 1.0
        bar.update()
        assert out.getvalue().split("\r")[-1] == "purchase orders [##########----------]  2/4   50%  1.0/s"
        clock.now += 2.0
        bar.update(2)
    text = out.getvalue()
    assert text.startswith("\rpurchase orders [--------------------]  0/4    0%  0.0/s")
    assert text.endswith("\n")
    assert text.count("\n") == 1
    last = text.rstrip("\n").split("\r")[-1]
    assert last == "purchase orders [####################]  4/4  100%  1.0/s"


def test_unknown_total_shows_count_and_rate():
    out, clock = FakeTty(), Clock()
    bar = Progress(out, None, "parts", clock=clock)
    clock.now += 2.0
    bar.update(5)
    bar.close()
    bar.close()  # a second close writes nothing more
    assert out.getvalue() == "\rparts 5  2.5/s\rparts 5  2.5/s\n"


def test_redraws_are_throttled_but_the_end_is_drawn():
    out, clock = FakeTty(), Clock()
    with Progress(out, 1000, "parts", clock=clock) as bar:
        for _ in range(999):
            bar.update()  # the clock does not move: no redraw
        assert out.getvalue().count("\r") == 1
        bar.update()  # the last one is always drawn
    assert out.getvalue().count("\r") == 3  # start, 1000/1000, close
    assert "1000/1000" in out.getvalue()


def test_shorter_line_wipes_the_longer_one_and_long_labels_fit():
    out, clock = FakeTty(), Clock()
    bar = Progress(out, None, "x" * 200, clock=clock)
    line = bar.render()
    assert len(line) <= 78
    assert line.startswith("xxx")
    assert "..." in line
    bar._draw(force=True)
    bar.label = "y"
    bar._draw(force=True)
    first, second = out.getvalue().split("\r")[1:]
    assert len(second) == len(first)
    assert second.rstrip() == "y 0  0.0/s"


def test_stream_progress_callback_draws_one_line_per_stream():
    from ionqbo.progress import StreamProgress

    out, clock = FakeTty(), Clock()
    with StreamProgress(out, clock=clock) as show:
        clock.now += 1.0
        show("parts", 2)
        clock.now += 1.0
        show("parts", 4)
        show("purchase_orders", 1)
    lines = out.getvalue().split("\n")
    assert lines[0].split("\r")[-1].rstrip() == "parts 4  4.0/s"  # timed from the first report
    assert lines[1].split("\r")[-1].rstrip() == "purchase orders 1  0.0/s"
    assert lines[2] == ""


def test_stream_progress_is_silent_on_a_pipe():
    from ionqbo.progress import StreamProgress

    out = io.StringIO()
    with StreamProgress(out) as show:
        show("parts", 3)
        show("purchase_orders", 1)
    assert out.getvalue() == ""
