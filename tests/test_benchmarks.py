"""Smoke tests of the scripts in benchmarks/ (tiny repeat counts: they check the plumbing,
not the speed)."""

import importlib.util
import re
from pathlib import Path

import pytest

pytest.importorskip("ofa.imagenet_classification.elastic_nn.networks")

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}",
                                                  ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_supernet_speed_quick(tmp_path, capsys):
    bench = load_script("supernet_speed")
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n## Other section\n\nkept\n")
    argv = ["--quick", "--resolutions", "32", "--threads", "1", "--repeats", "1",
            "--warmup", "0", "--min-time", "0", "--markdown", str(md)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    for config in ("smallest", "random", "largest"):
        assert re.search(rf"^ratio 32px b64 {config}: super \d+\.\d\dx, super CL \d+\.\d\dx, "
                         rf"extracted \d+\.\d\dx, extracted CL \d+\.\d\dx$", out, re.M), out
    assert re.search(r"^ratio super: min \d+\.\d\dx", out, re.M)
    text = md.read_text()
    assert "kept" in text and text.count(bench.MARK_START) == 1
    assert "python benchmarks/supernet_speed.py --quick --resolutions 32" in text
    # a rerun replaces the block, nothing else
    bench.write_markdown(md, f"{bench.MARK_START}\nnew\n{bench.MARK_END}")
    text = md.read_text()
    assert text.count(bench.MARK_START) == 1 and "\nnew\n" in text and "kept" in text
    assert "| 32 | 64 |" not in text
    # a block of another name goes right after the default one, and is replaced in turn
    start, end = bench.markers("supernet_speed_alt")
    for body in ("alt1", "alt2"):
        bench.write_markdown(md, f"{start}\n{body}\n{end}", "supernet_speed_alt")
    text = md.read_text()
    assert text.index(bench.MARK_END) < text.index(start) and "alt1" not in text
    assert text.count(start) == 1 and "alt2" in text
