"""Progress displays: a tqdm bar on a terminal, plain periodic lines in log files."""

from __future__ import annotations

import io

from tqdm import tqdm

from natv2.progress import LineProgress, progress


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_file_gets_plain_lines_at_the_interval_and_the_final_count():
    stream, clock = io.StringIO(), FakeClock()
    bar = LineProgress(1000, "supernet full", stream, interval=30, clock=clock)
    with bar:
        for step in range(1000):
            clock.now = step * 0.1  # 100 s in all
            bar.update(1)
            bar.set_postfix(loss=f"{1 / (step + 1):.3f}", epoch=step // 100 + 1)
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # the first update, then every 30 s (at 30, 60, 90 s), then the final count at close
    assert len(lines) == 5, lines
    assert lines[0].startswith("supernet full: 1/1000 (0%)")
    assert lines[-1].startswith("supernet full: 1000/1000 (100%)")
    assert "loss=0.001" in lines[-1] and "epoch=10" in lines[-1]


def test_the_final_line_is_not_repeated():
    stream, clock = io.StringIO(), FakeClock()
    with LineProgress(2, "x", stream, interval=30, clock=clock) as bar:
        bar.update(1)
        clock.now = 40
        bar.update(1)  # a line for 2/2 here: close adds none
    assert len(stream.getvalue().splitlines()) == 2


def test_unknown_total_and_byte_units():
    stream = io.StringIO()
    with progress(None, "download", stream=stream, unit="B", unit_scale=True) as bar:
        bar.update(5_000_000)
    assert stream.getvalue().startswith("download: 5.00MB [")


def test_progress_picks_the_display_for_the_stream():
    assert isinstance(progress(10, "x", stream=io.StringIO()), LineProgress)
    bar = progress(10, "x", stream=Terminal())
    assert isinstance(bar, tqdm) and not bar.disable
    bar.close()
    quiet = io.StringIO()
    with progress(10, "x", False, stream=quiet) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""
