"""Smoke tests of the scripts in benchmarks/ (tiny repeat counts: they check the plumbing,
not the speed)."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}",
                                                  ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_supernet_speed_quick(tmp_path, capsys):
    # the reference network is the `ofa` package (in the dev extra); only this script needs it
    pytest.importorskip("ofa.imagenet_classification.elastic_nn.networks")
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


# ------------------------------------------------------------------ search benchmarks


@pytest.fixture(scope="module")
def random_supernet(tmp_path_factory) -> Path:
    """An untrained EE_B super-network (the embedded default's family): plumbing only."""
    import torch

    from natv2.supernet import build_supernet, save_checkpoint

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("supernet")
    save_checkpoint(build_supernet("EE_B", n_classes=10), d / "supernet.pt")
    return d


@pytest.fixture(scope="module")
def search_runs(random_supernet, tmp_path_factory):
    bench = load_script("search_quality")
    root = tmp_path_factory.mktemp("sq")
    md = root / "BENCHMARKS.md"
    argv = ["--config", "config/test.yaml", "--supernet", str(random_supernet), "--work",
            str(root / "work"), "--seeds", "0", "1", "--rounds", "2", "--variants", "natv2", "nat",
            "natv2 without pre-processing", "--markdown", str(md), "--plot",
            str(root / "plot.png")]
    assert bench.main(argv) == 0
    return bench, root, md


def test_search_quality_equal_budget_and_block(search_runs):
    bench, root, md = search_runs
    summary = json.loads((root / "work" / "summary.json").read_text())
    # test.yaml: n_doe 6, pre-processing x2, 2 candidates/round, 2 rounds -> 12 + 2 x 2 = 16;
    # nat and natv2 without pre-processing start from 6 and get 2 + 6/2 = 5 per round
    assert summary["budget"] == 16
    for run in summary["runs"]:
        assert run["curve"]["new"][-1] == 16, run
        assert len(run["curve"]["hv"]) == 3 and all(v > 0 for v in run["curve"]["hv"])
    nat = [r for r in summary["runs"] if r["variant"] == "nat"]
    assert [r["curve"]["new"] for r in nat] == [[6, 11, 16]] * 2
    # the seeds differ in their search, not in the data: different initial archives
    a, b = (root / "work" / "nat" / f"seed_{s}" / "search" / "round_00" / "archive.csv"
            for s in (0, 1))
    assert a.read_text() != b.read_text()
    text = md.read_text()
    assert text.count(bench._common.markers("search_quality")[0]) == 1
    assert re.search(r"^\| natv2 \| 2 \| 12 \| 2 \| 16 \|", text, re.M), text
    assert re.search(r"^    natv2 vs nat, final hypervolume: paired difference [+-]\d\.\d{4} ± "
                     r"\d\.\d{4} over 2 seeds \(natv2 higher in \d, lower in \d, tied in \d\); "
                     r"Wilcoxon signed-rank p = \d\.\d{3}: ", text, re.M), text
    assert re.search(r"^\| nat \| final hypervolume \| 0: [+-]\d\.\d{4}, 1: [+-]\d\.\d{4} \|",
                     text, re.M), text
    assert (root / "plot.png").stat().st_size > 10_000
    comps = summary["comparisons"]
    assert {(c["variant"], c["metric"]) for c in comps} >= {("nat", "final hypervolume")}
    # a second configuration's block goes beside the first under its own heading (a rerun of
    # the finished runs: nothing is evaluated again)
    md2 = root / "BENCHMARKS-alt.md"
    md2.write_text(text)
    supernet = root / "work" / "natv2" / "seed_0" / "supernet"
    argv = ["--config", "config/test.yaml", "--supernet", str(supernet), "--work",
            str(root / "work"), "--seeds", "0", "1", "--rounds", "2", "--variants", "natv2",
            "nat", "--markdown", str(md2), "--block", "search_quality_alt", "--section",
            "## Search quality, another config", "--plot", str(root / "plot-alt.png")]
    before = sorted(p.stat().st_mtime_ns for p in (root / "work").rglob("evaluated.csv"))
    assert bench.main(argv) == 0
    assert sorted(p.stat().st_mtime_ns for p in (root / "work").rglob("evaluated.csv")) == before
    text2 = md2.read_text()
    first = text[text.index(bench._common.markers("search_quality")[0]):
                 text.index(bench._common.markers("search_quality")[1])]
    assert first in text2  # the first block is untouched
    alt_start, alt_end = bench._common.markers("search_quality_alt")
    assert text2.count(alt_start) == 1 and text2.count(alt_end) == 1
    assert text2.index("## Search quality, another config") < text2.index(alt_start)
    assert (root / "plot-alt.png").stat().st_size > 10_000


def test_search_quality_rejects_an_unequal_budget(random_supernet, tmp_path, capsys):
    bench = load_script("search_quality")
    argv = ["--config", "config/test.yaml", "--supernet", str(random_supernet), "--work",
            str(tmp_path), "--rounds", "4"]
    assert bench.main(argv) == 2
    assert "choose rounds dividing 6" in capsys.readouterr().err


def test_predictors_on_the_search_runs(search_runs, capsys):
    _, root, md = search_runs
    bench = load_script("predictors")
    argv = ["--config", "config/test.yaml", "--work", str(root / "work"), "--train-sizes", "6",
            "--repeats", "2", "--threads", "1", "--markdown", str(md)]
    assert bench.main(argv) == 0
    text = md.read_text()
    start = text.index(bench._common.markers("predictors")[0])
    assert start > text.index(bench._common.markers("search_quality")[1])
    for label, _, _ in bench.PREDICTORS:
        assert re.search(rf"^\| {re.escape(label)} \| -?\d\.\d{{3}} ± \d\.\d{{3}} \|", text, re.M)
    assert re.search(r"^    n=6: by mean Kendall tau ", text, re.M)


def test_scaling_block(random_supernet, tmp_path):
    bench = load_script("scaling")
    md = tmp_path / "B.md"
    argv = ["--config", "config/test.yaml", "--supernet", str(random_supernet), "--work",
            str(tmp_path / "work"), "--sizes", "4:1", "6:2", "--markdown", str(md)]
    assert bench.main(argv) == 0
    text = md.read_text()
    assert re.search(r"^\| 4 \| 1 \| 8 \| ", text, re.M) and re.search(r"^\| 6 \| 2 \| 12 \| ",
                                                                        text, re.M)
    assert re.search(r"^    init time ~ n_doe\^-?\d\.\d\d$", text, re.M)


def test_pipeline_cost_parts(random_supernet, tmp_path):
    bench = load_script("pipeline_cost")
    project = tmp_path / "project"
    (project / "config").mkdir(parents=True)
    (project / "config" / "test.yaml").write_text((ROOT / "config" / "test.yaml").read_text())
    (project / "results" / "supernet").mkdir(parents=True)
    (project / "results" / "supernet" / "supernet.pt").write_bytes(
        (random_supernet / "supernet.pt").read_bytes())
    split = bench.evaluation_split(project, "config/test.yaml", n_archs=2, repeats=1,
                                   extra_resolutions=[24])
    assert len(split["per_arch"]) == 4 and split["n_calib"] == 32
    md, overhead = bench.split_table(split)
    lines = md.splitlines()
    assert lines[-2].startswith("| **search space (all of the above)** | 2 |")
    assert lines[-1].startswith("| 24 px (outside the space: cost only) | 2 |")
    assert overhead > -1.0
    logs = project / "logs" / "benchmarks"
    logs.mkdir(parents=True)
    head = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for name, s in (("report", 1.5), ("supernet", 10.0), ("search_round_01", 3.0)):
        (logs / f"{name}.tsv").write_text(head + f"{s}\t0:00:01\t800.5\t1\t1\t1\t0\t0\t50\t{s}\n")
    table = bench.stage_table(project)
    assert list(table["stage"]) == ["supernet", "search_round_01", "report"]
    assert table["max_rss"].tolist() == [800.5] * 3


def test_pipeline_cost_throughput_and_results(tmp_path):
    """Rates from supernet.json and the rounds' stats.json; the run's findings from the report's
    metrics.json, every baseline's margin computed."""
    bench = load_script("pipeline_cost")
    project = tmp_path / "project"
    (project / "config").mkdir(parents=True)
    (project / "config" / "test.yaml").write_text((ROOT / "config" / "test.yaml").read_text())
    res = project / "results"
    (res / "supernet").mkdir(parents=True)
    (res / "supernet" / "supernet.json").write_text(json.dumps({
        "phases": [{"name": "full", "epochs": 2, "seconds": 3.0},
                   {"name": "kernel", "epochs": 1, "seconds": 2.0}],
        "val_top1": {"largest": 90.0, "smallest": 80.5}}))
    for k, steps in enumerate(({"evaluate": 4.0}, {"adapt": 1.5, "evaluate": 1.0, "reevaluate": 1.0},
                               {"adapt": 3.0, "evaluate": 2.0, "reevaluate": 2.0})):
        (res / f"search/round_{k:02d}").mkdir(parents=True)
        (res / f"search/round_{k:02d}/stats.json").write_text(
            json.dumps({"n_evaluated": 8 if k == 0 else 4, "steps": steps}))
    table = bench.throughput_table(project, "config/test.yaml").splitlines()
    # config/test.yaml: 300 training images; kernel 1 sub-network per step, adaptation 1
    assert table[2] == "| super-network phase `full` | 2 epochs x 300 images x 1 | 3.0 | 200 images/s |"
    assert table[3] == "| super-network phase `kernel` | 1 epochs x 300 images x 2 | 2.0 | 300 images/s |"
    assert table[4] == "| round 0 evaluations | 8 architectures | 4.0 | 2.00 evaluations/s |"
    assert table[5] == "| round 1 adaptation | 1 epochs x 300 images x 1 | 1.5 | 200 images/s |"
    assert table[6] == "| round 1 evaluations | 4 architectures | 2.0 | 2.00 evaluations/s |"
    assert table[8] == "| round 2 evaluations | 4 architectures | 4.0 | 1.00 evaluations/s |"
    assert len(table) == 2 + 2 + 1 + 2 * 2
    (res / "report").mkdir()
    (res / "report/metrics.json").write_text(json.dumps({
        "best_top1": 91.5, "baselines": {"svm_rbf": 92.0, "largest": 89.25},
        "targets": [{"name": "small", "metric": "params", "measured": 64538.0, "limit": 1e5,
                     "met": True, "top1_fp32": 90.0},
                    {"name": "fast", "metric": "latency_ms", "measured": None, "limit": 0.1,
                     "met": False}]}))
    lines = bench.results_lines(project, "config/test.yaml")
    assert lines[0] == ("Super-network validation top-1: largest 90.00 %, smallest 80.50 %. "
                        "Best fine-tuned test top-1: 91.50 %.")
    assert "| svm_rbf | 92.00 | -0.50 |" in lines and "| largest | 89.25 | +2.25 |" in lines
    assert "Target small: met (params 64,538, limit 100,000), test top-1 90.00 %." in lines
    assert "Target fast: no network in the archive meets it." in lines


def test_latency_backends_block(tmp_path, capsys):
    bench = load_script("latency")
    md = tmp_path / "BENCHMARKS.md"
    argv = ["--archs", "2", "--resolutions", "32", "--batches", "1", "2", "--runs", "2", "--warmup", "0",
            "--threads", "1", "--markdown", str(md)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    for batch in (1, 2):
        assert re.search(rf"^32px b{batch}: torch \d+\.\d\d ms, torch CL \d+\.\d\d ms, onnxruntime \d+\.\d\d ms; "
                         rf"onnxruntime/torch \d+\.\d\d, onnxruntime/torch CL \d+\.\d\d; at most half of torch: "
                         rf"[0-2]/2$", out, re.M), out
        assert re.search(rf"^32px b{batch} lookup table: torch MAPE \d+\.\d%, tau (-?\d\.\d\d|n/a); "
                         rf"onnxruntime MAPE \d+\.\d%, tau (-?\d\.\d\d|n/a); onnxruntime INT8 \d+\.\d\d ms, "
                         rf"INT8/FP32 \d+\.\d\d$", out, re.M), out
    for backend in ("torch", "onnxruntime"):
        assert re.search(rf"^lookup table {backend} b2: [1-9]\d* entries in \d+\.\d s$", out, re.M), out
    text = md.read_text()
    assert "python benchmarks/latency.py --archs 2" in text and text.count("<!-- latency:start -->") == 1
    assert re.search(r"^\| 32 \| 2 \| \d+\.\d\d \| \d+\.\d\d \| \d+\.\d\d \| \d+\.\d\d \| \d+\.\d\d \| [0-2]/2 \|$",
                     text, re.M), text
    tau = r"(-?\d\.\d\d|n/a)"
    assert re.search(rf"^\| 32 \| 2 \| \d+\.\d \| {tau} \| \d+\.\d \| {tau} \| \d+\.\d\d \| \d+\.\d\d \|$",
                     text, re.M), text
    assert "torch b1 " in text and "entries in" in text and "top1_int8" in text


def test_search_quality_n_doe_overrides_every_run(tmp_path):
    bench = load_script("search_quality")
    args = bench.parse_args(["--config", "config/test.yaml", "--supernet", str(tmp_path),
                             "--rounds", "2", "--n-doe", "10"])
    base = bench.load_config(args.config, overrides=bench.common_overrides(args))
    # n_doe 10, pre-processing x2, 2 candidates/round: 20 + 2 x 2; nat: 10 + 2 x (2 + 10/2)
    budget, variants = bench.budgeted_variants(base, ["natv2", "nat"], args.rounds)
    assert budget == 24 and variants["nat"]["candidates"] == 7
    cfg = bench.run_config(args.config, tmp_path / "r", 3, 2, variants["nat"],
                           bench.common_overrides(args))
    assert cfg["search"]["n_doe"] == 10 and cfg["search"]["seed"] == 3
    assert cfg["search"]["candidates"] == 7 and cfg["search"]["policy"] == "nat"
    assert bench.common_overrides(bench.parse_args(["--supernet", "x"])) == {}
