"""natv2.measure.int8: static INT8 quantisation of extracted networks, accuracy and size."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from natv2.measure.int8 import int8_top1, quantize_int8
from natv2.onnx_export import export_onnx
from natv2.space import SearchSpace
from natv2.supernet import build_supernet

LISTS = {"ks_list": (3,), "expand_list": (3,), "depth_list": (2, 3, 4)}


def _net(family: str, **extract):
    torch.manual_seed(0)
    space = SearchSpace(family=family, resolutions=(32,), **LISTS)
    arch = space.smallest()
    if space.has_nd:
        arch = dataclasses.replace(arch, nd=2)
    return build_supernet(family, n_classes=10, **LISTS).extract(arch, **extract).eval()


@pytest.fixture(scope="module")
def calibration():
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(16, 3, 32, 32, generator=gen) for _ in range(2)]


def test_int8_keeps_the_logits_and_shrinks_the_model(calibration, tmp_path):
    net = _net("SE_B")
    quantized = quantize_int8(net, calibration)
    x = calibration[0]
    with torch.no_grad():
        fp32 = net(x).numpy()
        export_onnx(net, x[:1], tmp_path / "fp32.onnx")
    int8 = quantized.session().run(None, {"input": x.numpy()})[0]
    assert int8.shape == fp32.shape
    assert np.corrcoef(int8.ravel(), fp32.ravel())[0, 1] > 0.9
    assert quantized.size_bytes < (tmp_path / "fp32.onnx").stat().st_size / 2.5


def test_int8_top1_counts_agreements(calibration):
    net = _net("SE_B")
    quantized = quantize_int8(net, calibration)
    x = calibration[1]
    labels = torch.from_numpy(quantized.session().run(None, {"input": x.numpy()})[0].argmax(1))
    assert int8_top1(quantized, [(x, labels)]) == 100.0
    assert int8_top1(quantized, [(x, (labels + 1) % 10)]) == 0.0
    with pytest.raises(ValueError, match="no images"):
        int8_top1(quantized, [])


def test_a_multi_exit_network_is_quantised_as_its_ensemble(calibration):
    from natv2.model import MultiExitModel

    net = _net("EE_B", all_exits=True)
    assert net.multi_exit
    quantized = quantize_int8(MultiExitModel(net), calibration)
    out = quantized.session().run(None, {"input": calibration[0].numpy()})
    assert len(out) == 1 and out[0].shape == (16, 10)


def test_no_calibration_is_an_error():
    with pytest.raises(ValueError, match="at least one calibration batch"):
        quantize_int8(_net("SE_B"), [])


def test_the_evaluator_can_score_the_int8_network():
    """search.accuracy: int8: the record's top1 is the INT8 network's validation top-1 (the
    quantised model scored on the same images), the FP32 top-1 beside it."""
    from natv2.data import DataSettings, build_splits
    from natv2.measure import Evaluator
    from natv2.measure.int8 import int8_top1 as score

    torch.manual_seed(0)
    space = SearchSpace(family="SE_B", resolutions=(16,), **LISTS)
    net = build_supernet("SE_B", n_classes=10, **LISTS).eval()
    splits = build_splits(DataSettings.from_config({"seed": 0, "data": {"name": "digits", "calib_size": 32}}),
                          16, augment=False)
    arch = space.largest()
    fp32 = Evaluator(net, splits, "cpu", [16], encoder=space)(arch)
    ev = Evaluator(net, splits, "cpu", [16], encoder=space, int8=True)
    rec = ev(arch)
    assert "top1_fp32" not in fp32 and rec["top1_fp32"] == pytest.approx(fp32["top1"])
    sub = net.extract(arch).to(memory_format=torch.channels_last)  # the same steps by hand:
    ev.recalibrate_and_count(sub, 16)  # recalibrate (channels-last, as the evaluator), quantise, score
    sub = sub.to(memory_format=torch.contiguous_format).eval()
    quantized = quantize_int8(sub, [b.contiguous() for b in ev.calibration(16)])
    assert rec["top1"] == pytest.approx(score(quantized, ev.validation(16)))
