"""natv2.space: Arch value object, NAT/OFAv2 encodings, errors, features, bounds."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natv2.space import (
    FAMILIES,
    NW_CONV1X1,
    NW_MBCONV,
    NW_TRANSFORM,
    Arch,
    SearchSpace,
    SpaceError,
    has_dense,
    has_nd,
    has_nw,
)

NAT_RES = list(range(192, 257, 4))
NAT_STRING = "08011001440551052208877"
NAT_CONFIG = {
    "ks": [3, 3, 3, 3, 3, 5, 5, 3, 5, 5, 5, 5, 5, 3, 3],
    "e": [3, 3, 3, 4, 4, 4, 4, 3, 4, 3, 3, 6, 6, 6, 6],
    "d": [2, 3, 3, 3, 4],
    "r": 224,
    "w": 1.0,
}
FAST = settings(max_examples=40, deadline=None)


def space_of(family: str) -> SearchSpace:
    return SearchSpace(family=family, resolutions=NAT_RES, widths=[1.0, 1.2])


@st.composite
def family_and_vector(draw):
    family = draw(st.sampled_from(FAMILIES))
    space = space_of(family)
    vec = [draw(st.integers(int(lo), int(hi))) for lo, hi in zip(space.xl, space.xu, strict=True)]
    return space, np.array(vec, dtype=np.int64)


@st.composite
def arches(draw):
    family = draw(st.sampled_from(FAMILIES))
    slots = st.lists(st.sampled_from((3, 5, 7)), min_size=20, max_size=20)
    return Arch(
        family=family,
        resolution=draw(st.sampled_from(NAT_RES)),
        width=draw(st.sampled_from((1.0, 1.2))),
        ks=draw(slots),
        e=draw(st.lists(st.sampled_from((3, 4, 6)), min_size=20, max_size=20)),
        d=draw(st.lists(st.sampled_from((2, 3, 4)), min_size=5, max_size=5)),
        nd=draw(st.integers(1, 5)) if has_nd(family) else None,
        nw=draw(st.lists(st.integers(1, 7), min_size=20, max_size=20)) if has_nw(family) else None,
    )


# ----------------------------------------------------------------------- NAT example
def test_nat_released_net_decodes_exactly():
    space = SearchSpace(family="SE_B", resolutions=NAT_RES, widths=[1.0, 1.2])
    arch = space.decode(NAT_STRING)
    assert arch.to_nat() == NAT_CONFIG
    assert (arch.resolution, arch.width, arch.d, arch.nd, arch.nw) == (
        224,
        1.0,
        (2, 3, 3, 3, 4),
        None,
        None,
    )
    assert space.encode(arch) == NAT_STRING
    assert space.decode("08 0 1100 1440 5510 5220 8877") == arch
    assert space.decode(space.to_vector(arch)) == arch
    assert list(space.to_vector(arch)) == [8, 0] + [int(c) for c in NAT_STRING[3:]]
    ofa = arch.to_ofa()
    assert [len(ofa[k]) for k in ("ks", "e", "d")] == [20, 20, 5]
    assert ofa["ks"][:4] == [3, 3, 3, 3] and ofa["e"][4:8] == [3, 4, 4, 3]
    assert arch.n_blocks == 15
    assert "k5e6" in str(arch) and "224" in str(arch)


def test_non_canonical_zero_means_skip_and_encode_is_canonical():
    space = space_of("SE_B")
    vec = [8, 0, 1, 1, 0, 5] + [1, 1, 0, 0] * 4
    arch = space.decode(vec)
    assert arch.d[0] == 3 and arch.ks[:3] == (3, 3, 5) and arch.e[:3] == (3, 3, 4)
    assert space.encode(vec) == space.encode(arch) == "080" + "1150" + "1100" * 4
    assert space.is_valid(vec)


# ----------------------------------------------------------------------- round trips
@FAST
@given(family_and_vector())
def test_vector_round_trips_every_family(case):
    space, vec = case
    arch = space.decode(vec)
    canonical = space.to_vector(arch)
    assert canonical.dtype == np.int64 and canonical.shape == (space.n_var,)
    np.testing.assert_array_equal(canonical, space.repair(vec, "push"))
    np.testing.assert_array_equal(canonical, space.canonical(vec))
    text = space.encode(arch)
    assert len(text) == 3 + 20 * (2 if space.has_nw else 1) + (1 if space.has_nd else 0)
    assert space.decode(text) == arch == space.from_vector(canonical)
    assert space.encode(vec) == text
    assert (arch.nd is not None) == space.has_nd and (arch.nw is not None) == space.has_nw


@FAST
@given(arches())
def test_arch_round_trips(arch):
    space = space_of(arch.family)
    assert space.decode(space.encode(arch)) == arch
    assert space.from_vector(space.to_vector(arch)) == arch
    assert Arch.from_nat(arch.to_nat(), family=arch.family) == arch
    assert hash(Arch(**arch.__dict__)) == hash(arch)
    nat = arch.to_nat()
    assert len(nat["ks"]) == len(nat["e"]) == arch.n_blocks == sum(arch.d)
    assert ("nd" in nat) == has_nd(arch.family) and ("nw" in nat) == has_nw(arch.family)
    if "nw" in nat:
        assert len(nat["nw"]) == arch.n_blocks


# ----------------------------------------------------------------------- Arch
def base_kwargs(**over):
    kw = dict(family="SE_B", resolution=224, width=1.0, ks=[7] * 20, e=[6] * 20, d=[2, 3, 4, 2, 2])
    kw.update(over)
    return kw


def test_arch_normalises_inactive_slots_and_is_a_value():
    a = Arch(**base_kwargs())
    assert a.ks[2:4] == (3, 3) and a.ks[4:7] == (7, 7, 7) and a.ks[7] == 3 and a.e[3] == 3
    b = Arch(**base_kwargs(ks=[7, 7, 5, 3] + [7] * 16, d=np.array([2, 3, 4, 2, 2])))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert isinstance(a.ks, tuple) and isinstance(a.d[0], int)
    with pytest.raises(AttributeError):
        a.resolution = 1  # type: ignore[misc]
    p = Arch(**base_kwargs(family="EE_DP", nd=3, nw=[7] * 20))
    assert p.nw[:3] == (7, 7, 1) and p.nd == 3 and has_dense("EE_DP") and not has_dense("EE_P")


@pytest.mark.parametrize(
    ("over", "words"),
    [
        ({"ks": [4] + [3] * 19}, ["Arch.ks[0]", "stage 1 slot 1", "4", "(3, 5, 7)"]),
        ({"e": [3] * 19 + [5]}, ["Arch.e[19]", "stage 5 slot 4", "5"]),
        ({"d": [2, 3, 1, 2, 2]}, ["Arch.d[2]", "stage 3", "1", "(2, 3, 4)"]),
        ({"ks": [3] * 19}, ["Arch.ks", "20", "19"]),
        ({"family": "SE_X"}, ["SE_X", "SE_B"]),
        ({"resolution": 0}, ["Arch.resolution", "0"]),
        ({"resolution": 224.5}, ["Arch.resolution", "224.5"]),
        ({"width": -1.0}, ["Arch.width", "-1.0"]),
        ({"nd": 3}, ["Arch.nd", "SE_B"]),
        ({"nw": [1] * 20}, ["Arch.nw", "SE_B"]),
        ({"family": "EE_B"}, ["Arch.nd", "EE_B"]),
        ({"family": "EE_B", "nd": 6}, ["Arch.nd", "6", "(1, 2, 3, 4, 5)"]),
        ({"family": "SE_P"}, ["Arch.nw", "SE_P"]),
        ({"family": "SE_P", "nw": [1] * 5 + [8] + [1] * 14}, ["Arch.nw[5]", "stage 2 slot 2", "8"]),
    ],
)
def test_arch_validation_messages(over, words):
    with pytest.raises(ValueError) as info:
        Arch(**base_kwargs(**over))
    for word in words:
        assert word in str(info.value)


def test_nw_bits_and_block_codes():
    assert (NW_MBCONV, NW_CONV1X1, NW_TRANSFORM) == (1, 2, 4)
    space = space_of("SE_P")
    assert space.block_code(3, 3, 1) == 1 and space.block_code(7, 6, 7) == 63
    assert space.block_code(5, 4, 2) == 1 + 1 + 3 * 1 + 9 * 1
    for code in range(1, 64):
        ks, e, nw = space.block_choice(code)
        assert space.block_code(ks, e, nw) == code
    assert space_of("SE_B").block_choice(9) == (7, 6, None)
    with pytest.raises(ValueError, match="64"):
        space.block_choice(64)


# ----------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("family", "encoding", "words"),
    [
        ("SE_B", [8, 0, 1, 1, 12] + [1] * 17, ["position 5 (stage 1 slot 3)", "value 12", "0..9"]),
        ("SE_B", [8, 0, 0, 1] + [1] * 18, ["position 3 (stage 1 slot 1)", "value 0", "1..9"]),
        ("SE_B", [8, 0, 1, 1, 1, 1, 1, 0] + [1] * 14, ["position 8 (stage 2 slot 2)", "value 0"]),
        ("SE_B", [17, 0] + [1] * 20, ["position 1 (r, resolution index)", "value 17", "0..16"]),
        ("SE_B", [8, 2] + [1] * 20, ["position 2 (w, width index)", "value 2", "0..1"]),
        ("SE_B", [8, -1] + [1] * 20, ["position 2", "value -1"]),
        ("SE_B", [8, 0, 1.5] + [1] * 19, ["position 3", "1.5", "not an integer"]),
        ("SE_B", [8, 0] + [1] * 19, ["21 values", "22"]),
        ("EE_B", [8, 0] + [1] * 20 + [6], ["position 23 (nd, net depth)", "value 6", "1..5"]),
        ("EE_B", [8, 0] + [1] * 20 + [0], ["position 23", "value 0", "1..5"]),
        ("SE_P", [8, 0] + [64] + [1] * 19, ["position 3", "value 64", "1..63"]),
        ("SE_B", "0801100144055105220887", ["22 characters", "23"]),
        ("SE_B", "0801100144055105220887a", ["position 22 (stage 5 slot 4)", "'a'", "digit"]),
        ("SE_B", "170110014405510522088777", ["24 characters"]),
        ("SE_B", "17011001440551052208877", ["position 1 (r, resolution index)", "value 17"]),
        ("SE_B", "08001001440551052208877", ["position 3 (stage 1 slot 1)", "value 0"]),
        ("SE_P", "080" + "01" * 19 + "64", ["position 22 (stage 5 slot 4)", "value 64"]),
        ("SE_P", "080" + "01" * 19 + "6x", ["position 22", "'6x'"]),
        ("EE_B", NAT_STRING + "7", ["position 23 (nd, net depth)", "value 7"]),
    ],
)
def test_bad_encodings_name_position_and_value(family, encoding, words):
    with pytest.raises(ValueError) as info:
        space_of(family).decode(encoding)
    for word in words:
        assert word in str(info.value)
    assert space_of(family).is_valid(encoding) is False


def test_encode_rejects_arch_outside_space():
    space = SearchSpace("SE_B", resolutions=[224], widths=[1.0], ks_list=(3, 5))
    with pytest.raises(SpaceError, match="Arch.family"):
        space.encode(Arch(**base_kwargs(family="SE_D")))
    with pytest.raises(SpaceError, match="Arch.resolution: value 192"):
        space.encode(Arch(**base_kwargs(resolution=192)))
    with pytest.raises(SpaceError, match="Arch.width: value 1.2"):
        space.encode(Arch(**base_kwargs(width=1.2)))
    with pytest.raises(SpaceError, match=r"Arch.ks\[0\] \(stage 1 slot 1\): value 7"):
        space.encode(Arch(**base_kwargs()))


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"family": "XX_B"}, "XX_B"),
        ({"resolutions": [224, 192]}, "resolutions"),
        ({"resolutions": []}, "resolutions"),
        ({"resolutions": list(range(1, 102))}, "resolutions"),
        ({"widths": [1.0] * 2}, "widths"),
        ({"widths": [0.5 + i / 10 for i in range(11)]}, "widths"),
        ({"ks_list": (3, 9)}, "ks_list"),
        ({"expand_list": (6, 3)}, "expand_list"),
        ({"depth_list": (2, 4)}, "depth_list"),
    ],
)
def test_search_space_validation(kwargs, word):
    with pytest.raises(ValueError, match=word):
        SearchSpace(**kwargs)


# ----------------------------------------------------------------------- bounds, extremes
@pytest.mark.parametrize("family", FAMILIES)
def test_bounds_smallest_largest(family):
    space = space_of(family)
    n_code = 63 if has_nw(family) else 9
    assert space.n_var == (23 if has_nd(family) else 22) == len(space.var_names)
    assert space.xl.dtype == np.int64 and space.xu.dtype == np.int64
    assert list(space.xl[:6]) == [0, 0, 1, 1, 0, 0] and list(space.xu[:6]) == [16, 1] + [n_code] * 4
    if space.has_nd:
        assert (space.xl[-1], space.xu[-1]) == (1, 5)
    space.xl[0] = 99  # a copy: the space is unchanged
    assert space.xl[0] == 0
    small, large = space.smallest(), space.largest()
    assert (small.resolution, small.width, small.d) == (192, 1.0, (2,) * 5)
    assert set(small.ks) == {3} and set(small.e) == {3}
    assert (large.resolution, large.width, large.d) == (256, 1.2, (4,) * 5)  # the thesis ub: the widest width
    assert set(large.ks) == {7} and set(large.e) == {6}
    assert small.nd == (1 if space.has_nd else None) and large.nd == (5 if space.has_nd else None)
    if space.has_nw:  # the thesis' lb: the transformation branch alone in every block
        active = [s * 4 + j for s in range(5) for j in range(small.d[s])]
        assert {small.nw[i] for i in active} == {NW_TRANSFORM} and set(large.nw) == {7}
        assert space.encode(small)[3:5] == "28"  # 1 + 3 * 3 * (4 - 1), natv2's code of k3 e3 nw 4
    else:
        np.testing.assert_array_equal(space.to_vector(small), space.xl)
    assert family in repr(space) and "n_var" in repr(space)
    assert space == space_of(family) and hash(space) == hash(space_of(family))


def test_custom_depth_list_bounds():
    space = SearchSpace("SE_B", resolutions=[224], depth_list=(3, 4))
    assert list(space.xl[2:6]) == [1, 1, 1, 0] and list(space.xu[2:6]) == [9] * 4
    assert space.smallest().d == (3,) * 5
    short = SearchSpace("SE_B", resolutions=[224], depth_list=(2, 3))
    assert list(short.xu[2:6]) == [9, 9, 9, 0] and short.largest().d == (3,) * 5
    with pytest.raises(ValueError, match="position 6 .*max depth is 3"):
        short.decode([0, 0] + [1] * 20)


# ----------------------------------------------------------------------- features
def test_features_shapes_and_canonicalisation():
    space = space_of("SE_B")
    archs = space.sample(5, seed=1)
    X = space.features(archs)
    assert X.shape == (5, 22) and X.dtype == float
    width = int((space.xu - space.xl + 1).sum())
    assert width == 17 + 2 + 5 * (9 + 9 + 10 + 10)
    H = space.features(archs, kind="onehot")
    assert H.shape == (5, width) and np.all(H.sum(axis=1) == 22)
    np.testing.assert_array_equal(space.features([space.encode(a) for a in archs]), X)
    vectors = np.stack([space.to_vector(a) for a in archs])
    np.testing.assert_array_equal(space.features(vectors), X)
    non_canonical = [8, 0, 1, 1, 0, 5] + [1, 1, 0, 0] * 4
    canonical = [8, 0, 1, 1, 5, 0] + [1, 1, 0, 0] * 4
    np.testing.assert_array_equal(
        space.features([non_canonical], "onehot"), space.features([canonical], "onehot")
    )
    assert space.features([], "onehot").shape == (0, width)
    assert space_of("EE_P").features([], "onehot").shape[1] == 17 + 2 + 5 * (63 * 4 + 2) + 5
    with pytest.raises(ValueError, match="row 1"):
        space.features(np.array([canonical, [99] + canonical[1:]]))
    with pytest.raises(ValueError, match="kind"):
        space.features(archs, kind="bits")


def test_is_valid_batch():
    space = space_of("SE_B")
    good = space.to_vector(space.largest())
    bad = good.copy()
    bad[2] = 0
    assert space.is_valid(good) is True and space.is_valid(bad) is False
    assert list(space.is_valid(np.stack([good, bad, good.astype(float) + 0.5]))) == [
        True,
        False,
        False,
    ]
    assert space.is_valid(NAT_STRING) and not space.is_valid(NAT_STRING[:-1])


def test_space_does_not_import_torch():
    code = "import sys, natv2.space; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
