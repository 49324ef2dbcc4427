"""natv2.report: build_report on a small fake results tree; files, keys, determinism, browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from natv2.errors import UserError
from natv2.report import OUTPUTS, ReportSettings, build_report
from natv2.targets import parse_targets

CHROMIUM = "/usr/bin/chromium"
# slot 0 meets its target, slot 1's latency is not measured, slot 2 misses its MACs target
TARGETS = parse_targets([{"params": 600_000}, {"latency_ms": 2.0, "name": "fast"},
                         {"macs": 5_000_000}])
CONFIG = {
    "name": "fake <run> & 'quotes'",
    "supernet": {"family": "SE_B", "source": "train"},
    "search": {"policy": "natv2", "rounds": 2, "objectives": ["top1", "params"]},
    "finetune": {"slots": 4},
    "targets": [t.as_dict() for t in TARGETS],
}
COLUMNS = ["arch", "top1", "params", "macs", "latency_ms", "round", "origin",
           "predicted_top1", "r", "w", "d", "nd"]


def _rows(rng: np.random.Generator, start: int, n: int, round_k: int, origin: str) -> list:
    rows = []
    for i in range(start, start + n):
        params = int(rng.integers(400_000, 1_200_000))
        top1 = round(60 + 30 * (params - 400_000) / 800_000 + float(rng.normal(0, 4)), 3)
        rows.append({
            "arch": f"{i % 17:02d}0{i:020d}", "top1": top1, "params": params,
            "macs": int(params * 9 + rng.integers(0, 500_000)), "latency_ms": "",
            "round": round_k, "origin": origin,
            "predicted_top1": round(top1 + 1, 3) if origin == "candidate" else "",
            "r": 32, "w": 1.0, "d": "2-3-3-3-4", "nd": "",
        })
    return rows


def _csv(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)


def _json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


BASELINES = {
    "dataset": "fashion-mnist", "split_sizes": {"train": 50, "val": 20, "test": 30},
    "classical": [
        {"name": "logistic_regression", "label": "logistic regression (raw pixels)", "top1": 90.0},
        {"name": "svm_rbf", "label": "RBF SVM (raw pixels)", "top1": 96.0}],
    "largest": {"arch": "x", "resolution": 32, "top1": 93.5, "params": 1_200_000,
                "macs": 9_000_000},
    "published": [{"model": "MobileNet <flips>", "top1": 95.0, "source": "https://example.org/b"}],
}


def make_results(root: Path, rounds: int = 2, finetune: bool = True) -> Path:
    """Fake results tree: round 0 + ``rounds`` rounds, 3 fine-tuned ranks + 1 unused slot."""
    rng = np.random.default_rng(0)
    search = root / "search"
    evaluated = _rows(rng, 0, 14, 0, "init")
    evaluated[0]["origin"] = evaluated[1]["origin"] = "bound"
    archive = sorted(evaluated, key=lambda r: -r["top1"])[:10]
    _csv(search / "round_00" / "evaluated.csv", evaluated)
    _csv(search / "round_00" / "archive.csv", archive)
    _json(search / "round_00" / "stats.json", {
        "round": 0, "hypervolume": 0.41, "reference_point": [100.0, 1.2e6],
        "n_evaluated": 14, "seconds": 12.5})
    for k in range(1, rounds + 1):
        cands = _rows(rng, 100 * k, 4, k, "candidate")
        cands.append({**archive[0], "round": k, "top1": 1.0, "origin": "candidate"})  # dup
        archive = sorted(archive + cands[:4], key=lambda r: -r["top1"])[:10]
        d = search / f"round_{k:02d}"
        _csv(d / "candidates.csv", cands)
        _csv(d / "archive.csv", archive)
        _json(d / "stats.json", {
            "round": k, "hypervolume": 0.41 + 0.05 * k, "reference_point": [100.0, 1.2e6],
            "n_evaluated": 14 + 5 * k,
            "predictor": {"name": "lgb", "rmse": 2.0 / k, "spearman": 0.5 + 0.1 * k,
                          "kendall": 0.3 + 0.1 * k},
            "seconds": 30.0 + k, "steps": {"predictor": 3.0, "search": 20.0, "evaluate": 7.0},
            **({"latency_table": {"mape": 12.5, "kendall_tau": 0.8, "n": 3,
                                  "points": [[1.0, 1.1], [2.0, 2.4], [3.0, 2.9]]}} if k == 2 else {})})
    _json(root / "supernet" / "supernet.json", {
        "family": "SE_B", "width_mult": 1.0, "source": "train", "sha256": "ab" * 32,
        "phases": [{"name": "full", "epochs": 2, "seconds": 40.0},
                   {"name": "kernel", "epochs": 1, "seconds": 21.5}],
        "val_top1": {"largest": 91.2, "smallest": 80.4}, "seconds": 61.5})
    if finetune:
        for n, (params, after) in enumerate([(500_000, 88.5), (800_000, 92.25),
                                             (1_100_000, 95.0)]):
            enc = f"0{n}0<enc&{n}>"
            metrics = {"top1_before": after - 5, "top1_after": after, "params": params,
                       "macs": params * 9, "latency_ms": None if n == 1 else 1.5 + n,
                       "encoding": enc, "seconds": 10.0 + n,
                       "target": {**TARGETS[n].as_dict(), "met_in_archive": n != 2}}
            _json(root / "finetune" / f"rank_{n}" / "metrics.json", metrics)
            _json(root / "finetune" / f"rank_{n}" / "arch.json", {
                "encoding": enc, "family": "SE_B", "width_mult": 1.0, "resolution": 32,
                "n_classes": 10, "config": {"d": [2, 3, 3, 3, 4]}})
        _json(root / "finetune" / "rank_3" / "metrics.json",
              {"used": False, "reason": "only 3 non-dominated architectures"})
        _json(root / "baselines" / "baselines.json", BASELINES)
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = make_results(tmp_path_factory.mktemp("results"))
    out = root / "report"
    metrics = build_report(root, out, CONFIG, ReportSettings(TARGETS, 2, 4))
    return root, out, metrics


class _Rows(HTMLParser):
    """Counts <tr> inside <table id=...> <tbody> and collects <img src>."""

    def __init__(self):
        super().__init__()
        self.table: str | None = None
        self.in_body = False
        self.rows: dict[str, int] = {}
        self.imgs: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.table = a.get("id", "")
            self.rows.setdefault(self.table, 0)
        elif tag == "tbody":
            self.in_body = True
        elif tag == "tr" and self.in_body and self.table is not None:
            self.rows[self.table] += 1
        elif tag == "img":
            self.imgs.append(a.get("src", ""))

    def handle_endtag(self, tag):
        if tag == "tbody":
            self.in_body = False
        elif tag == "table":
            self.table = None


def _parse(text: str) -> _Rows:
    p = _Rows()
    p.feed(text)
    return p


def test_outputs_and_metrics(built):
    root, out, metrics = built
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == metrics
    assert set(metrics) == {"hypervolume", "best_top1", "targets", "baselines",
                            "versus_baselines", "n_evaluated", "rounds"}
    assert metrics["baselines"] == {"logistic_regression": 90.0, "svm_rbf": 96.0,
                                    "largest": 93.5}
    # the best fine-tuned (95.0) is 1 point below the SVM and 1.5 above the largest
    assert metrics["versus_baselines"] == {
        "classical": {"baseline": "svm_rbf", "top1": 96.0, "margin": -1.0, "beaten": False},
        "all": {"baseline": "svm_rbf", "top1": 96.0, "margin": -1.0, "beaten": False}}
    assert metrics["hypervolume"] == pytest.approx(0.51)
    assert metrics["rounds"] == 2
    assert metrics["n_evaluated"] == 14 + 4 + 4  # duplicate candidates counted once
    assert metrics["best_top1"] == 95.0
    rows = metrics["targets"]
    assert [r["name"] for r in rows] == ["params <= 600k", "fast", "macs <= 5M"]
    assert [r["rank"] for r in rows] == [0, 1, 2]
    assert [r["measured"] for r in rows] == [500_000, None, 9_900_000]
    assert [r["met"] for r in rows] == [True, None, False]
    assert [r["met_in_archive"] for r in rows] == [True, True, False]
    assert [r["top1_fp32"] for r in rows] == [88.5, 92.25, 95.0]
    assert rows[0]["card"] == os.path.join("..", "finetune", "rank_0", "card.md")
    for name in ("pareto.png", "hypervolume.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pareto_csv_is_final_front(built):
    root, out, _ = built
    df = pd.read_csv(out / "pareto.csv", dtype={"arch": str})
    assert list(df.columns) == ["params", "macs", "top1", "arch", "round", "front"]
    final = pd.read_csv(root / "search" / "round_02" / "archive.csv", dtype={"arch": str})
    assert sorted(df["arch"]) == sorted(final["arch"])
    assert df["params"].is_monotonic_increasing
    # brute-force non-domination on (max top1, min params)
    expect = {
        a for a, t, p in zip(final["arch"], final["top1"], final["params"], strict=True)
        if not any((t2 >= t and p2 <= p) and (t2 > t or p2 < p)
                   for t2, p2 in zip(final["top1"], final["params"], strict=True))
    }
    assert set(df.loc[df["front"], "arch"]) == expect and expect


def test_html_content(built):
    _, out, _ = built
    text = (out / "index.html").read_text()
    page = _parse(text)
    assert page.rows["finetuned"] == 3
    assert page.rows["targets"] == 3
    assert '<a href="../finetune/rank_0/card.md">card</a>' in text
    assert "met: params 500,000 &lt;= 600,000" in text
    assert "not met: macs" in text and "latency_ms not measured" in text
    assert "no architecture of the final archive met it" in text  # slot 2: the closest one
    assert page.rows["front"] >= 1
    assert page.rows["baselines"] == 3 + 3  # LR, SVM, largest + the 3 fine-tuned networks
    assert "95.00 %, 1.00 points below the best classical baseline (svm_rbf, 96.00 %)" in text
    assert page.rows["published"] == 1 and "MobileNet &lt;flips&gt;" in text
    assert len(page.imgs) == 4 and all(s.startswith("data:image/png;base64,") for s in page.imgs)
    assert page.rows["latency_table"] == 1  # round 2 read the lookup table
    assert "<td>12.50</td><td>0.800</td>" in text
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)
    assert "fake &lt;run&gt; &amp; &#x27;quotes&#x27;" in text  # config escaped inside <pre>
    assert "0&lt;enc&amp;1&gt;" in text and "<enc&" not in text
    assert "not available" in text  # rank 1 has no latency
    assert "only 3 non-dominated architectures" in text
    for stage in ("supernet", "init_archive (round 0)", "search_round 1", "search_round 2",
                  "finetune rank 2"):
        assert f">{stage}<" in text
    assert "policy: natv2" in text


def test_deterministic(built, tmp_path):
    root, out, _ = built
    build_report(root, tmp_path / "again", CONFIG, ReportSettings(TARGETS, 2, 4))
    for name in OUTPUTS:
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name


def test_missing_optional_inputs(tmp_path):
    root = make_results(tmp_path / "r", rounds=0, finetune=False)
    (root / "supernet" / "supernet.json").unlink()
    (root / "search" / "round_00" / "stats.json").unlink()
    metrics = build_report(root, tmp_path / "out", {}, ReportSettings(parse_targets([{"params": 1000}]), 0, 0))
    assert metrics["targets"][0]["finetuned"] is False and metrics["targets"][0]["met"] is None
    assert metrics["targets"][0]["card"] is None
    del metrics["targets"]
    assert metrics == {"hypervolume": None, "best_top1": None, "baselines": {},
                       "versus_baselines": None, "n_evaluated": 14, "rounds": 0}
    text = (tmp_path / "out" / "index.html").read_text()
    assert "no <code>baselines/baselines.json</code> yet" in text
    assert _parse(text).rows["finetuned"] == 0
    assert text.count("not available") >= 4


def test_reads_only_the_rounds_and_slots_it_is_told(tmp_path):
    """Folders left by an earlier run with more rounds or slots are not shown: the final archive
    is that of round ``rounds`` (the one fine-tuning used), and slot 3 is beyond ``slots``."""
    root = make_results(tmp_path / "r", rounds=3)
    metrics = build_report(root, tmp_path / "out", CONFIG, ReportSettings(TARGETS, 2, 3))
    assert metrics["rounds"] == 2
    assert metrics["hypervolume"] == pytest.approx(0.41 + 0.05 * 2)
    text = (tmp_path / "out" / "index.html").read_text()
    assert ">search_round 3<" not in text and ">search_round 2<" in text
    assert "only 3 non-dominated architectures" not in text  # rank_3, beyond the 3 slots
    full = build_report(root, tmp_path / "all", CONFIG, ReportSettings(TARGETS, 3, 4))
    assert full["rounds"] == 3 and full["hypervolume"] == pytest.approx(0.41 + 0.05 * 3)


def test_missing_archive_is_user_error(tmp_path):
    with pytest.raises(UserError) as exc:
        build_report(tmp_path / "nothing", tmp_path / "out", CONFIG, ReportSettings(TARGETS, 2, 4))
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(tmp_path / "nothing" / "search" / "round_00" / "archive.csv") in msg
    assert "natv2 init-archive" in msg
    assert not (tmp_path / "out").exists()


def test_report_imports_no_torch():
    code = "import sys, natv2.report; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def _chromium(tmp_path: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    """Run headless Chromium on ``args``; kill its whole process group on a hang, retry once."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: run .ci/install-chromium.sh to install Chromium "
                    "for the report's browser test")
    for attempt in (1, 2):
        run_dir = tmp_path / f"chromium-{len(list(tmp_path.glob('chromium-*')))}"
        run_dir.mkdir()
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
               f"--user-data-dir={run_dir / 'profile'}",
               "--run-all-compositor-stages-before-draw", "--virtual-time-budget=5000", *args]
        env = {**os.environ, "HOME": str(run_dir)}
        # files, not pipes: chromium's helper processes inherit them and may outlive it
        with open(run_dir / "stdout", "w") as out, open(run_dir / "stderr", "w") as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=run_dir,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = None
        stdout = (run_dir / "stdout").read_text(errors="replace")
        stderr = (run_dir / "stderr").read_text(errors="replace")
        if rc is not None:
            return subprocess.CompletedProcess(cmd, rc, stdout, stderr)
        if attempt == 2:
            pytest.fail(f"chromium hung for {timeout}s twice on {args}; stderr: {stderr[-1500:]}")
    raise AssertionError("unreachable")


def test_browser_renders_report(built, tmp_path):
    _, out, _ = built
    page = tmp_path / "index.html"
    shutil.copy(out / "index.html", page)  # a copy: chromium must not need anything beside it
    url = page.as_uri()
    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'<body[^>]*\bdata-loaded="(\d+)"', dom.stdout)
    assert m, f"load script did not run; DOM starts: {dom.stdout[:500]!r}"
    assert int(m.group(1)) == 4  # pareto, hypervolume, predictor, latency table: all decoded
    assert re.search(r'<body[^>]*\bdata-images="4"', dom.stdout)
    assert _parse(dom.stdout).rows["finetuned"] == 3

    shot = tmp_path / "report.png"
    res = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000",
                    "--hide-scrollbars", url)
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_missing_chromium_fails_not_skips(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", str(tmp_path / "no-chromium"))
    with pytest.raises(pytest.fail.Exception, match=r"\.ci/install-chromium\.sh"):
        _chromium(tmp_path, "--version")
