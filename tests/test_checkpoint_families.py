"""Raw state_dicts of the 8 families as a super-network source (natv2.supernet.sources).

A raw ``state_dict`` (plain, ``{"state_dict": ...}``, ``module.``-prefixed) of the configured
family loads every tensor; OFA's ``SE_B`` layout warm-starts an OFAv2 family; anything else is
refused in one line saying which family, width and class count the file holds. ``B`` / ``D``
and ``P`` / ``DP`` families hold the same tensors (same keys and shapes), so a file of one is
named as "X or Y" and loads into the other: weights cannot tell them apart.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from randomized import randomize

from natv2.errors import MESSAGE_LIMIT, UserError
from natv2.supernet import FAMILIES, build_supernet, save_checkpoint
from natv2.supernet.sources import fit_head, load_source_supernet, open_source

SMALL = {"ks_list": [3], "expand_list": [3], "depth_list": [2, 3, 4]}
N_CLASSES = 10
TWIN = {"SE_B": "SE_D", "SE_D": "SE_B", "SE_P": "SE_DP", "SE_DP": "SE_P",
        "EE_B": "EE_D", "EE_D": "EE_B", "EE_P": "EE_DP", "EE_DP": "EE_P"}
LISTS = "ks_list [3], expand_list [3], depth_list [2, 3, 4]"


@pytest.fixture(scope="module")
def nets():
    """``(family, width_mult, n_classes) -> super-network`` with random weights, built once."""
    cache: dict[tuple, torch.nn.Module] = {}

    def net(family: str, width: float = 1.0, n_classes: int = N_CLASSES, **lists):
        key = (family, width, n_classes, tuple(sorted((k, tuple(v)) for k, v in lists.items())))
        if key not in cache:
            torch.manual_seed(len(cache))
            built = build_supernet(family, width_mult=width, n_classes=n_classes, **{**SMALL, **lists})
            cache[key] = randomize(built, len(cache)).eval()
        return cache[key]

    return net


def build(family: str, width: float = 1.0) -> dict:
    """What the supernet stage passes as ``build`` (``family_kwargs``)."""
    return {"family": family, "width_mult": width, **SMALL}


def save_raw(path: Path, state: dict, wrap: str = "plain") -> Path:
    if wrap == "module":
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save({"state_dict": state, "epoch": 3} if wrap == "wrapped" else state, path)
    return path


def refusal(path: Path, family: str, width: float = 1.0, whole: bool = True) -> str:
    """The one-line refusal of ``path`` for the configured ``family``: never torch's advice;
    ``whole``: within the CLI's line limit (no ellipsis) for a path of 64 characters."""
    with pytest.raises(UserError) as info:
        load_source_supernet(path, build(family, width))
    message = str(info.value)
    assert "\n" not in message and "weights_only" not in message, message
    if whole:
        assert len(message.replace(str(path), "p" * 64)) <= MESSAGE_LIMIT, message
    return message


def pair(family: str) -> str:
    """How a refusal names a family: with its twin, in the order of FAMILIES."""
    both = sorted((family, TWIN[family]), key=FAMILIES.index)
    return f"{both[0]} or {both[1]}"


def held(path: Path, family: str, width: float = 1.0, n_classes: int = N_CLASSES) -> str:
    return (f"checkpoint '{path}' holds a raw state_dict of an {pair(family)} super-network "
            f"(width_mult {width}, {n_classes} classes)")


# ------------------------------------------------------------------ the configured family loads


@pytest.mark.parametrize("wrap", ["plain", "wrapped", "module"])
@pytest.mark.parametrize("family", FAMILIES)
def test_raw_state_dict_of_the_configured_family_loads_every_tensor(family, wrap, nets, tmp_path):
    source = nets(family)
    path = save_raw(tmp_path / "raw.pth", source.state_dict(), wrap)
    opened = open_source({"file": str(path)}, str(tmp_path / "cache"), build(family))
    assert opened.load == {"loaded": "all tensors"}
    assert opened.net.family == family and opened.net.n_classes == N_CLASSES
    got, want = opened.net.state_dict(), source.state_dict()
    assert list(got) == list(want)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_raw_state_dict_of_width_1_2_loads(nets, tmp_path):
    source = nets("EE_P", 1.2)
    path = save_raw(tmp_path / "raw.pth", source.state_dict(), "wrapped")
    net, load = load_source_supernet(path, build("EE_P", 1.2))
    assert load == {"loaded": "all tensors"} and net.width_mult == 1.2
    assert all(torch.equal(net.state_dict()[k], v) for k, v in source.state_dict().items())


def test_another_class_count_is_a_head_replacement_not_an_error(nets, tmp_path):
    source = nets("EE_B", n_classes=7)
    path = save_raw(tmp_path / "raw7.pth", source.state_dict())
    net, load = load_source_supernet(path, build("EE_B"))
    assert load == {"loaded": "all tensors"} and net.n_classes == 7  # the checkpoint's classes
    assert all(torch.equal(net.state_dict()[k], v) for k, v in source.state_dict().items())
    assert fit_head(net, N_CLASSES) and net.n_classes == N_CLASSES  # the dataset's: a new head


def test_b_and_d_twins_cannot_be_told_apart_by_their_weights(nets, tmp_path):
    """An EE_B file loads into EE_D (same keys, same shapes): no refusal is possible."""
    path = save_raw(tmp_path / "ee_b.pth", nets("EE_B").state_dict())
    net, load = load_source_supernet(path, build("EE_D"))
    assert load == {"loaded": "all tensors"} and net.family == "EE_D"


# ---------------------------------------------------------------- OFA's SE_B layout: warm start


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "SE_B"])
def test_se_b_layout_warm_starts_an_ofav2_family(family, nets, tmp_path):
    ofa = nets("SE_B")
    path = save_raw(tmp_path / "ofa.pth", ofa.state_dict(), "wrapped")
    net, load = load_source_supernet(path, build(family))
    if family == "SE_D":  # SE_B's keys and shapes exactly: every tensor
        assert load == {"loaded": "all tensors"}
    else:
        assert load["copied"] == len(ofa.state_dict()) and load["skipped"] == []
        assert load["new_modules"]
    state = net.state_dict()
    assert all(torch.equal(state[k], v) for k, v in ofa.state_dict().items())


# ---------------------------------------------------------------- anything else: one line


@pytest.mark.parametrize("stored, configured", [
    ("EE_B", "SE_P"), ("SE_P", "SE_B"), ("EE_DP", "EE_B"), ("SE_DP", "EE_P"), ("EE_D", "SE_B"),
])
def test_raw_state_dict_of_another_family_is_refused_naming_both(stored, configured, nets,
                                                                  tmp_path):
    path = save_raw(tmp_path / "other.pth", nets(stored).state_dict(), "module")
    assert refusal(path, configured) == (
        f"{held(path, stored)}; the config asks for {configured}: set supernet.family: "
        f"{pair(stored)} (whichever it was trained as) or use an {configured} checkpoint")


@pytest.mark.parametrize("stored, configured", [(1.2, 1.0), (1.0, 1.2)])
def test_raw_state_dict_of_another_width_is_refused_naming_both(stored, configured, nets,
                                                                 tmp_path):
    path = save_raw(tmp_path / "w.pth", nets("SE_P", stored).state_dict(), "wrapped")
    assert refusal(path, "SE_P", configured) == (
        f"{held(path, 'SE_P', stored)}; the config asks for SE_P with width_mult {configured}: "
        f"set supernet.width_mult: {stored} or use a width_mult {configured} checkpoint")


def test_se_b_layout_of_another_width_for_an_ofav2_family(nets, tmp_path):
    path = save_raw(tmp_path / "ofa_w12.pth", nets("SE_B", 1.2).state_dict(), "wrapped")
    assert refusal(path, "EE_B") == (
        f"{held(path, 'SE_B', 1.2)}; the config asks for EE_B with width_mult 1.0: set "
        f"supernet.width_mult: 1.2 or use a width_mult 1.0 checkpoint")


def test_another_family_and_width(nets, tmp_path):
    path = save_raw(tmp_path / "ee_b_w12.pth", nets("EE_B", 1.2, n_classes=7).state_dict())
    assert refusal(path, "SE_P") == (
        f"{held(path, 'EE_B', 1.2, 7)}; the config asks for SE_P with width_mult 1.0: set "
        f"supernet.family: EE_B or EE_D and width_mult: 1.2, or use another checkpoint")


def test_other_choice_lists_same_keys(nets, tmp_path):
    path = save_raw(tmp_path / "e4.pth", nets("SE_B", expand_list=[4]).state_dict())
    assert refusal(path, "SE_B", whole=False) == (
        f"checkpoint '{path}' holds a raw state_dict with the keys of an SE_B or SE_D "
        f"super-network, not the shapes of width_mult 1.0 or 1.2 with the configured lists "
        f"(first: 'blocks.1.conv.inverted_bottleneck.conv.conv.weight'): set supernet.ks_list "
        f"and expand_list as it was built")


def test_no_family_at_all_names_the_nearest(nets, tmp_path):
    state = dict(nets("SE_B").state_dict())
    state["blocks.3.conv.extra.weight"] = torch.zeros(1)
    path = save_raw(tmp_path / "extra.pth", state, "wrapped")
    assert refusal(path, "SE_P") == (
        f"checkpoint '{path}' holds a raw state_dict of none of the 8 families at the configured "
        f"width_mult and lists (nearest: SE_B or SE_D, 1 difference, first unexpected key "
        f"'blocks.3.conv.extra.weight'): use an SE_P checkpoint built with these")


def test_other_depth_list_names_the_nearest(nets, tmp_path):
    path = save_raw(tmp_path / "d23.pth", nets("EE_B", depth_list=[2, 3]).state_dict())
    message = refusal(path, "EE_B", whole=False)
    assert message.startswith(f"checkpoint '{path}' holds a raw state_dict of none of the 8 "
                              f"families at the configured width_mult and lists (nearest: "
                              f"EE_B or EE_D, "), message
    assert message.endswith("): use an EE_B checkpoint built with these"), message


def test_not_a_state_dict(nets, tmp_path):
    nested = tmp_path / "trainer.pth"
    torch.save({"model": nets("SE_B").state_dict(), "epoch": 3}, nested)
    assert refusal(nested, "SE_B") == (
        f"checkpoint '{nested}' holds a dict with entries that are not named tensors "
        f"('model', 'epoch'), not a state_dict: give a raw state_dict or {{\"state_dict\": ...}}")
    numbered = tmp_path / "numbered.pth"
    torch.save({0: torch.zeros(3)}, numbered)
    assert "holds a dict with entries that are not named tensors (0), not a state_dict" in (
        refusal(numbered, "SE_B"))
    headless = tmp_path / "headless.pth"
    torch.save({"w": torch.zeros(3)}, headless)
    assert refusal(headless, "SE_B") == (
        f"checkpoint '{headless}' holds a raw state_dict of 1 tensor without a classifier "
        f"weight ('classifier.*weight'): no super-network of the 8 families")


def test_extracted_network_is_not_a_super_network(nets, tmp_path):
    sub = nets("SE_B").extract({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5})
    path = save_checkpoint(sub, tmp_path / "model.pt")
    assert refusal(path, "SE_B") == (
        f"checkpoint '{path}' holds an extracted sub-network (natv2-static), not a "
        f"super-network: supernet.source needs a super-network checkpoint")


def test_a_refused_pickle_never_relays_torchs_advice(tmp_path):
    """torch wraps its unpickler's error in advice to load with ``weights_only=False``; the
    message keeps only the unpickler's own words."""
    from natv2.supernet.checkpoint import read_payload

    path = tmp_path / "odd_opcode.pt"
    path.write_bytes(b"\x80\x02\xff\x00")
    with pytest.raises(UserError) as info:
        read_payload(path)
    assert str(info.value) == (f"cannot read checkpoint '{path}': the pickle is cut or damaged "
                               f"(Unsupported operand 255)")
