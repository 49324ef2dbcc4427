"""natv2.measure.latency: the torch and onnxruntime backends, their settings and cache keys."""

from __future__ import annotations

import pytest
import torch

from natv2.config import ConfigError, validate
from natv2.measure.latency import LatencySettings, environment, measure_latency
from natv2.pipeline.search_context import SearchContext
from natv2.space import SearchSpace
from natv2.supernet import build_supernet

SPACE = SearchSpace(family="SE_B", resolutions=(32,), ks_list=(3,), expand_list=(3,), depth_list=(2, 3, 4))


@pytest.fixture(scope="module")
def subnet():
    torch.manual_seed(0)
    net = build_supernet("SE_B", n_classes=10, ks_list=(3,), expand_list=(3,), depth_list=(2, 3, 4))
    return net.extract(SPACE.smallest()).eval()


class Counting(torch.nn.Module):
    """Records the input shapes it is called with."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.shapes = inner, []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return self.inner(x)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_a_measurement_has_a_median_a_spread_and_its_runs(subnet, backend):
    settings = LatencySettings(backend=backend, threads=1, batch=2, warmup=1, runs=5)
    lat = measure_latency(subnet, 32, settings, "cpu")
    assert lat.runs == 5 and lat.median_ms > 0 and lat.iqr_ms >= 0


def test_the_torch_backend_times_the_batch_and_restores_the_threads(subnet):
    model = Counting(subnet)
    before = torch.get_num_threads()
    measure_latency(model, 32, LatencySettings("torch", threads=2, batch=3, warmup=2, runs=4), "cpu")
    assert model.shapes == [(3, 3, 32, 32)] * 6
    assert torch.get_num_threads() == before


def test_onnxruntime_runs_the_same_network(subnet, tmp_path):
    """What the onnxruntime backend times is the network itself (same logits)."""
    import numpy as np
    import onnxruntime

    from natv2.onnx_export import export_onnx

    x = torch.randn(2, 3, 32, 32)
    out = tmp_path / "n.onnx"
    with torch.no_grad():
        export_onnx(subnet, x[:1], out)
        expected = subnet(x).numpy()
    got = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()})[0]
    assert np.allclose(got, expected, atol=1e-4)


def test_settings_come_from_the_config_with_threads_defaulting_to_the_stage():
    cfg = validate({"threads": 3, "latency": {"backend": "onnxruntime", "runs": 7}})
    assert LatencySettings.from_config(cfg) == LatencySettings("onnxruntime", 3, 1, 5, 7)
    cfg = validate({"latency": {"threads": 1}})
    assert LatencySettings.from_config(cfg).threads == 1


@pytest.mark.parametrize(("raw", "expected"), [
    ({"latency": {"backend": "tvm"}}, "config key 'latency.backend': 'tvm' is not allowed; allowed: torch, onnxruntime"),
    ({"latency": {"runs": 0}}, "config key 'latency.runs': 0 is less than the minimum of 1"),
    ({"latency": {"batch": 0}}, "config key 'latency.batch': 0 is less than the minimum of 1"),
])
def test_bad_latency_settings_are_one_line(raw, expected):
    with pytest.raises(ConfigError) as info:
        validate(raw)
    assert str(info.value).startswith(expected), str(info.value)


def test_the_environment_names_the_machine_and_the_runtime():
    env = environment("onnxruntime")
    assert env["cpu"] and env["torch"] == torch.__version__ and env["onnxruntime"]
    assert "onnxruntime" not in environment("torch")


def _eval_settings(tmp_path, **search_and_latency):
    latency = search_and_latency.pop("latency", {})
    cfg = validate({"results_dir": str(tmp_path), "device": "cpu", "threads": 1,
                    "search": search_and_latency, "latency": latency})
    return SearchContext(cfg, "t", False).eval_settings


def test_cached_latencies_are_keyed_by_backend_settings_and_machine(tmp_path):
    plain = _eval_settings(tmp_path)
    assert "latency" not in plain  # without latency the cache key is the one it always was
    torch_key = _eval_settings(tmp_path, measure_latency=True)
    ort_key = _eval_settings(tmp_path, measure_latency=True, latency={"backend": "onnxruntime"})
    assert torch_key["latency"]["backend"] == "torch" and torch_key["latency"]["machine"]["cpu"]
    assert ort_key["latency"]["backend"] == "onnxruntime" and ort_key != torch_key
    assert _eval_settings(tmp_path, measure_latency=True, latency={"runs": 50}) != torch_key
