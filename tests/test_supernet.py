"""natv2.supernet against the reference OFA implementation (PyPI ``ofa``).

Reference networks get random weights, random BN statistics/affines and transform matrices
pushed away from the identity, so equality below is not an accident of the initialisation.
"""

from __future__ import annotations

import random
import re

import pytest
import torch
from torch import nn

from natv2.supernet import (
    FAMILIES,
    build_static,
    build_supernet,
    load_checkpoint,
    load_static,
    load_supernet,
    read_extra,
    save_checkpoint,
)
from natv2.supernet.elastic import ElasticLinear

ofa_nets = pytest.importorskip("ofa.imagenet_classification.elastic_nn.networks")
ofa_utils = pytest.importorskip("ofa.utils")

TOL = 1e-4
LARGEST = {"ks": [7] * 20, "e": [6] * 20, "d": [4] * 5}
SMALLEST = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5}


def random_archs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"ks": [rng.choice([3, 5, 7]) for _ in range(20)],
             "e": [rng.choice([3, 4, 6]) for _ in range(20)],
             "d": [rng.choice([2, 3, 4]) for _ in range(5)]} for _ in range(n)]


def make_reference(width: float, n_classes: int = 1000, seed: int = 0):
    torch.manual_seed(seed)
    ref = ofa_nets.OFAMobileNetV3(n_classes=n_classes, width_mult=width, ks_list=[3, 5, 7],
                                  expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])
    ofa_utils.init_models(ref, "he_fout")  # keeps activations O(1) through 20 blocks
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("_matrix"):
                p.add_(0.2 * torch.randn_like(p))
            elif ".se.fc." in name or name.startswith("classifier"):
                p.normal_(0.0, 0.5)
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
    return ref.eval()


def old_layout(state_dict: dict) -> dict:
    """OFA's older key layout: blocks hold ``.mobile_inverted_conv.`` instead of ``.conv.``."""
    return {re.sub(r"^(blocks\.\d+)\.conv\.", r"\1.mobile_inverted_conv.", k): v
            for k, v in state_dict.items()}


def flat_layout(state_dict: dict) -> dict:
    """Oldest variant OFA's loader handles: elastic ops without the nested ``.bn.bn.`` /
    ``.conv.conv.weight`` / ``.linear.linear.`` modules."""
    out = {}
    for k, v in old_layout(state_dict).items():
        k = k.replace(".bn.bn.", ".bn.").replace(".conv.conv.weight", ".conv.weight")
        out[k] = v
    return out


@pytest.fixture(scope="module", params=[1.0, 1.2], ids=["w1.0", "w1.2"])
def pair(request, tmp_path_factory):
    """(reference OFA net, our net loaded from the reference's *old-layout* file)."""
    width = request.param
    ref = make_reference(width)
    tmp = tmp_path_factory.mktemp(f"ckpt_w{width}")
    current, old = tmp / "current.pt", tmp / "old.pth"
    torch.save(ref.state_dict(), current)
    torch.save({"state_dict": old_layout(ref.state_dict()), "epoch": 3}, old)
    ours_current = load_checkpoint(build_supernet(width_mult=width), current).eval()
    ours = load_checkpoint(build_supernet(width_mult=width), old).eval()
    a, b = ours_current.state_dict(), ours.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    return ref, ours


def test_state_dict_layout_is_ofas(pair):
    ref, ours = pair
    r, o = ref.state_dict(), ours.state_dict()
    assert list(r) == list(o)
    for k in r:
        assert r[k].shape == o[k].shape, k
        assert torch.equal(r[k], o[k]), k


@pytest.mark.parametrize("res,batch", [(224, 1), (32, 2)])
def test_matches_reference(pair, res, batch):
    ref, ours = pair
    torch.manual_seed(1)
    x = torch.randn(batch, 3, res, res)
    archs = [LARGEST, SMALLEST] + random_archs(2 if res > 100 else 3, seed=res)
    outputs = []
    with torch.no_grad():
        for arch in archs:
            ref.set_active_subnet(ks=arch["ks"], e=arch["e"], d=arch["d"])
            y_ref = ref(x)
            y_ours = ours(x, arch)
            sub = ours.extract(arch).eval()
            ref_sub = ref.get_active_subnet(preserve_weight=True).eval()
            y_sub, y_ref_sub = sub(x), ref_sub(x)
            assert (y_ours - y_ref).abs().max().item() <= TOL
            assert (y_sub - y_ours).abs().max().item() <= 1e-5
            assert (y_sub - y_ref_sub).abs().max().item() <= TOL
            # the extracted net is OFA's extracted net, key by key
            s, rs = sub.state_dict(), ref_sub.state_dict()
            assert list(s) == list(rs)
            for k in s:
                assert s[k].shape == rs[k].shape, k
                assert torch.allclose(s[k].float(), rs[k].float(), atol=1e-6), k
            n_ours = sum(p.numel() for p in sub.parameters())
            assert n_ours == sum(p.numel() for p in ref_sub.parameters())
            only = [m for m in sub.modules() if type(m).__module__.startswith("natv2")]
            assert {type(m).__name__ for m in only} <= {"StaticNet", "Block", "MBConv",
                                                        "SqueezeExcite"}
            outputs.append(y_ours)
    # teeth: the sub-networks really compute different functions
    assert (outputs[0] - outputs[1]).abs().max().item() > 1e-2


def test_kernel_transform_matters(pair):
    """Resetting the 5to3 matrices to the identity must break equality with OFA: the
    transform is really used (and the comparison above would catch it)."""
    ref, ours = pair
    arch = dict(SMALLEST, ks=[3] * 20)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    net = build_supernet(width_mult=ours.width_mult)
    net.load_state_dict(ours.state_dict())
    net.eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("5to3_matrix"):
                p.copy_(torch.eye(9))
        ref.set_active_subnet(**arch)
        assert (net(x, arch) - ref(x)).abs().max().item() > 1e-3


def test_param_counts_literal():
    net = build_supernet(width_mult=1.0, n_classes=1000)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(net.extract(None)) == 7_664_760
    assert count(net.extract(LARGEST)) == 7_664_760
    assert count(net.extract(SMALLEST)) == 3_410_792


def test_flat_legacy_layout_loads(tmp_path):
    ref = make_reference(1.0, n_classes=10)
    path = tmp_path / "flat.pth"
    torch.save({"state_dict": flat_layout(ref.state_dict())}, path)
    ours = load_checkpoint(build_supernet(n_classes=10), path)
    r, o = ref.state_dict(), ours.state_dict()
    assert all(torch.equal(r[k], o[k]) for k in r)


@pytest.fixture(scope="module")
def small_state():
    return build_supernet(n_classes=10).state_dict()


def test_missing_key_named(small_state):
    sd = dict(small_state)
    del sd["blocks.5.conv.depth_conv.bn.bn.running_var"]
    with pytest.raises(ValueError, match=r"missing key 'blocks\.5\.conv\.depth_conv\.bn\.bn"
                                         r"\.running_var'"):
        load_checkpoint(build_supernet(n_classes=10), sd)


def test_missing_num_batches_tracked_tolerated(small_state):
    sd = {k: v for k, v in small_state.items() if not k.endswith("num_batches_tracked")}
    load_checkpoint(build_supernet(n_classes=10), sd)


def test_unexpected_key_named(small_state):
    sd = dict(small_state)
    sd["blocks.3.conv.extra_branch.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"unexpected key 'blocks\.3\.conv\.extra_branch"):
        load_checkpoint(build_supernet(n_classes=10), {"state_dict": sd})


def test_wrong_shape_named(small_state):
    sd = dict(small_state)
    sd["final_expand_layer.conv.weight"] = torch.zeros(960, 160, 3, 3)
    with pytest.raises(ValueError, match=r"final_expand_layer\.conv\.weight.*"
                                         r"\(960, 160, 3, 3\).*\(960, 160, 1, 1\)"):
        load_checkpoint(build_supernet(n_classes=10), sd)


def test_other_width_checkpoint_errors(tmp_path):
    path = tmp_path / "w12.pth"
    torch.save({"state_dict": build_supernet(width_mult=1.2, n_classes=10).state_dict()}, path)
    with pytest.raises(ValueError, match=r"shape mismatch for key 'first_conv\.conv\.weight'"):
        load_checkpoint(build_supernet(width_mult=1.0, n_classes=10), path)
    ours = tmp_path / "w12_ours.pt"
    save_checkpoint(build_supernet(width_mult=1.2, n_classes=10), ours)
    with pytest.raises(ValueError, match="width_mult=1.2"):
        load_checkpoint(build_supernet(width_mult=1.0, n_classes=10), ours)


def test_unknown_family_and_every_family_builds():
    with pytest.raises(ValueError, match=r"unknown family 'X'; valid: SE_B, SE_D, SE_P, SE_DP, "
                                         r"EE_B, EE_D, EE_P, EE_DP"):
        build_supernet("X")
    assert FAMILIES == ("SE_B", "SE_D", "SE_P", "SE_DP", "EE_B", "EE_D", "EE_P", "EE_DP")
    for family in FAMILIES:
        assert build_supernet(family, n_classes=2).family == family


def test_extract_leaves_supernet_untouched():
    torch.manual_seed(3)
    net = build_supernet(n_classes=10)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    arch = random_archs(1, seed=3)[0]
    sub = net.extract(arch)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # weights are cloned, not shared
    ptrs = {p.data_ptr() for p in net.parameters()} | {b.data_ptr() for b in net.buffers()}
    assert not any(t.data_ptr() in ptrs for t in sub.state_dict().values())
    with torch.no_grad():
        for p in sub.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], net.state_dict()[k]) for k in before)


def test_gradients_flow_to_active_params_only():
    torch.manual_seed(4)
    net = build_supernet(n_classes=10).train()
    arch = {"ks": [3] * 20, "e": [3] * 20, "d": [2, 2, 2, 2, 2]}
    arch["ks"][0] = 7  # stage 1, block 1 at full kernel: no transform matrix involved
    bn = net.blocks[1].conv.inverted_bottleneck["bn"].bn
    mid = 48  # make_divisible(round(16 * 3), 8)
    stats_before = bn.running_mean.clone()
    loss = net(torch.randn(2, 3, 32, 32), arch).logsumexp(1).sum()
    loss.backward()
    b1, b2, b3 = net.blocks[1], net.blocks[2], net.blocks[3]
    # active blocks get gradients, only in their active slice
    g = b1.conv.inverted_bottleneck["conv"].conv.weight.grad
    assert g[:mid].abs().sum() > 0 and torch.all(g[mid:] == 0)
    assert b1.conv.depth_conv["conv"].get_parameter("7to5_matrix").grad is None
    m53 = b2.conv.depth_conv["conv"].get_parameter("5to3_matrix")
    m75 = b2.conv.depth_conv["conv"].get_parameter("7to5_matrix")
    assert m53.grad is not None and m53.grad.abs().sum() > 0
    assert m75.grad is not None and m75.grad.abs().sum() > 0
    # SE (stage 2) and head
    se = net.blocks[5].conv.depth_conv["se"].fc["reduce"].weight.grad
    assert se is not None and se.abs().sum() > 0
    assert net.classifier.linear.weight.grad.abs().sum() > 0
    # skipped blocks get none
    assert all(p.grad is None for p in b3.parameters())
    # train-mode BN updates only the active slice of the running statistics
    assert not torch.equal(bn.running_mean[:mid], stats_before[:mid])
    assert torch.equal(bn.running_mean[mid:], stats_before[mid:])


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(5)
    net = build_supernet(n_classes=7, width_mult=1.2, dropout=0.2).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
    path = save_checkpoint(net, tmp_path / "sub" / "supernet.pt", extra={"phase": "kernel",
                                                                        "epochs": [1, 2]})
    assert not [p for p in path.parent.iterdir() if p.name != "supernet.pt"]  # no temp left
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == "natv2-supernet" and raw["config"] == net.config()
    assert read_extra(path) == {"phase": "kernel", "epochs": [1, 2]}
    again = load_supernet(path).eval()
    assert again.config() == net.config()
    into = load_checkpoint(build_supernet(**net.config()), path).eval()
    x = torch.randn(1, 3, 32, 32)
    arch = random_archs(1, seed=5)[0]
    with torch.no_grad():
        assert torch.equal(net(x, arch), again(x, arch))
        assert torch.equal(net(x, arch), into(x, arch))
    with pytest.raises(TypeError):
        save_checkpoint(net, tmp_path / "bad.pt", extra={"f": object()})


def test_replace_classifier_after_load(tmp_path):
    ref = make_reference(1.0, n_classes=1000)
    path = tmp_path / "ofa.pth"
    torch.save({"state_dict": old_layout(ref.state_dict())}, path)
    net = load_checkpoint(build_supernet(), path)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.replace_classifier(10)
    net.eval()
    assert net.n_classes == 10 and net.config()["n_classes"] == 10
    y = net(torch.randn(2, 3, 32, 32), SMALLEST)
    assert y.shape == (2, 10)
    after = net.state_dict()
    assert after["classifier.linear.weight"].shape == (10, 1280)
    assert all(torch.equal(before[k], after[k]) for k in after if not k.startswith("classifier"))
    rebuilt = build_supernet(**net.config())
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in after.items()}
    assert net.extract(SMALLEST).n_classes == 10


def test_static_config_round_trip(tmp_path):
    torch.manual_seed(6)
    net = build_supernet(n_classes=5).eval()
    arch = random_archs(1, seed=6)[0]
    sub = net.extract(arch).eval()
    rebuilt = build_static(sub.config())
    rebuilt.load_state_dict(sub.state_dict())
    rebuilt.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), sub(x))
        path = save_checkpoint(sub, tmp_path / "model.pt", extra={"top1": 50.0})
        loaded = load_static(path).eval()
        assert torch.equal(loaded(x), sub(x))
    import json

    json.dumps(sub.config())  # JSON-able


class _ArchLike:
    """Stands in for natv2.space.Arch (anything with .to_ofa())."""

    def __init__(self, d, width=1.0, family="SE_B"):
        self._d, self.width, self.family, self.resolution = d, width, family, 32

    def to_ofa(self):
        return self._d


def test_arch_inputs_and_validation():
    net = build_supernet(n_classes=3).eval()
    x = torch.randn(1, 3, 32, 32)
    arch = random_archs(1, seed=7)[0]
    with torch.no_grad():
        assert torch.equal(net(x, _ArchLike(arch)), net(x, arch))
        assert torch.equal(net(x), net(x, LARGEST))
        # values in skipped slots are ignored
        junk = {"ks": list(SMALLEST["ks"]), "e": list(SMALLEST["e"]), "d": [2] * 5}
        junk["ks"][3], junk["e"][3] = 0, 0
        assert torch.equal(net(x, junk), net(x, SMALLEST))
    bad = dict(SMALLEST, ks=[4] + [3] * 19)
    with pytest.raises(ValueError, match="kernel size 4"):
        net(x, bad)
    with pytest.raises(ValueError, match="needs 5"):
        net(x, {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 4})
    with pytest.raises(ValueError, match="width 1.2"):
        net(x, _ArchLike(arch, width=1.2))


def test_elastic_linear_extract():
    torch.manual_seed(8)
    lin = ElasticLinear(16, 8)
    x = torch.randn(4, 12)
    assert torch.equal(lin(x, 5), lin.extract(12, 5)(x))


def test_dtype_and_mode_follow_supernet(small_state):
    torch.manual_seed(9)
    net = build_supernet(n_classes=10).double().eval()
    arch = random_archs(1, seed=9)[0]
    sub = net.extract(arch)
    assert not sub.training and all(p.dtype == torch.float64 for p in sub.parameters())
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert (net(x, arch) - sub(x)).abs().max().item() < 1e-10
    assert net.train().extract(arch).training
    # DataParallel-style "module." prefixes are dropped
    load_checkpoint(build_supernet(n_classes=10), {f"module.{k}": v for k, v in small_state.items()})


# ------------------------------------------------------------- unreadable checkpoint files


class _Code:
    """Unpickling this runs a command: what a malicious checkpoint does."""

    def __reduce__(self):
        import os

        return (os.system, ("echo natv2-test-ran-code",))


def _unreadable_files(tmp_path):
    import pickle

    torch.save({"w": torch.zeros(100)}, tmp_path / "good.pt")
    good = (tmp_path / "good.pt").read_bytes()
    with open(tmp_path / "code_pickle.pt", "wb") as fh:
        pickle.dump({"x": _Code()}, fh, protocol=2)
    torch.save({"x": _Code()}, tmp_path / "code_zip.pt")
    files = {
        "code_zip.pt": r"a pickle that needs code beyond tensors to load \(GLOBAL posix\.system\); natv2 refuses it",
        "code_pickle.pt": r"a pickle that needs code beyond tensors to load \(GLOBAL posix\.system\)",
        "page.pt": (b"\n<!DOCTYPE html><html><body>Sign in</body></html>",
                    r"a web page \(it starts with '<!DOCTYPE html>'\), not a checkpoint"),
        "empty.pt": (b"", r"the file is empty \(0 bytes\)"),
        "garbage.pt": (bytes(range(7, 200)), r"not a PyTorch checkpoint \(it starts with b'\\x07\\x08"),
        "cut_zip.pt": (good[: len(good) // 2], r"the PyTorch file is cut or damaged \(PytorchStreamReader"),
        "cut_pickle.pt": (pickle.dumps({"a": 1}, protocol=2)[:-3], r"the pickle is cut or damaged"),
    }
    for name, spec in files.items():
        if isinstance(spec, tuple):
            (tmp_path / name).write_bytes(spec[0])
            files[name] = spec[1]
    return files


def test_unreadable_checkpoints_say_what_the_file_is(tmp_path, capfd):
    from natv2.errors import UserError
    from natv2.supernet.checkpoint import read_payload

    for name, expected in _unreadable_files(tmp_path).items():
        with pytest.raises(UserError) as info:
            read_payload(tmp_path / name)
        message = str(info.value)
        assert re.search(expected, message), (name, message)
        assert message.startswith(f"cannot read checkpoint '{tmp_path / name}': ")
        assert "weights_only" not in message and len(message) < 300, message  # never torch's advice
    assert "natv2-test-ran-code" not in capfd.readouterr().out  # the code was never run


def test_checkpoint_bytes_depend_on_the_weights_not_on_wall_times(tmp_path):
    """Same weights, other timings and file names: the same bytes (and sha256)."""
    from natv2.supernet import read_extra

    torch.manual_seed(0)
    net = build_supernet("SE_B", n_classes=10)
    for name, seconds in (("a.pt", 1.5), ("b.pt", 9.25)):
        save_checkpoint(net, tmp_path / name,
                        extra={"info": {"phases": [{"name": "full", "seconds": seconds}], "seconds": seconds}})
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert read_extra(tmp_path / "a.pt") == {"info": {"phases": [{"name": "full"}]}}
    with torch.no_grad():
        net.classifier.linear.bias.add_(1.0)
    save_checkpoint(net, tmp_path / "c.pt")
    assert (tmp_path / "c.pt").read_bytes() != (tmp_path / "a.pt").read_bytes()
