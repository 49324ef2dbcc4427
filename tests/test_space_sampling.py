"""natv2.space: repair (push / fill), samplers and their depth distributions."""

from __future__ import annotations

import numpy as np
import pytest

from natv2.space import FAMILIES, SAMPLING_METHODS, SearchSpace

NAT_RES = list(range(192, 257, 4))


def space_of(family: str = "SE_B") -> SearchSpace:
    return SearchSpace(family=family, resolutions=NAT_RES, widths=[1.0, 1.2])


def stage_vec(*stages, r=8, w=0):
    assert len(stages) == 5
    return np.array([r, w] + [c for stage in stages for c in stage], dtype=np.int64)


PLAIN = [1, 1, 0, 0]


# ----------------------------------------------------------------------- repair
@pytest.mark.parametrize(
    ("stage", "pushed", "filled"),
    [
        ([1, 1, 0, 5], [1, 1, 5, 0], [1, 1, 0, 0]),
        ([2, 3, 4, 5], [2, 3, 4, 5], [2, 3, 4, 5]),
        ([2, 3, 4, 0], [2, 3, 4, 0], [2, 3, 4, 0]),
        ([2, 3, 0, 0], [2, 3, 0, 0], [2, 3, 0, 0]),
        ([0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]),  # mandatory slots forced to 1 by clipping
        ([4, 0, 0, 7], [4, 1, 7, 0], [4, 1, 0, 0]),
        ([12, -3, 10, 6], [9, 1, 9, 6], [9, 1, 9, 6]),  # clipped to bounds first
    ],
)
def test_push_and_fill_hand_cases(stage, pushed, filled):
    space = space_of()
    vec = stage_vec(PLAIN, PLAIN, stage, PLAIN, PLAIN)
    np.testing.assert_array_equal(space.repair(vec, "push")[10:14], pushed)
    np.testing.assert_array_equal(space.repair(vec, "fill")[10:14], filled)
    assert space.is_valid(space.repair(vec, "fill"))
    assert vec[10:14].tolist() == stage  # input untouched


def test_push_keeps_the_decoded_arch_fill_may_shorten():
    space = space_of()
    vec = stage_vec([1, 1, 0, 5], PLAIN, PLAIN, PLAIN, PLAIN)
    assert space.decode(space.repair(vec, "push")) == space.decode(vec)
    assert space.decode(space.repair(vec, "fill")).d[0] == 2


def test_repair_clips_heads_rounds_floats_and_batches():
    space = space_of("EE_B")
    raw = np.array([[40.4, 3.0] + [8.6] * 20 + [9.0], [-2.0, -1.0] + [0.2] * 20 + [0.0]])
    out = space.repair(raw, "fill")
    assert out.dtype == np.int64 and out.shape == (2, 23)
    assert out[0, :3].tolist() == [16, 1, 9] and out[0, -1] == 5
    assert out[1, :6].tolist() == [0, 0, 1, 1, 0, 0] and out[1, -1] == 1
    assert all(space.is_valid(out))
    with pytest.raises(ValueError, match="repair method"):
        space.repair(out, "shove")
    with pytest.raises(ValueError, match="NaN"):
        space.repair(np.full(23, np.nan), "push")


# ----------------------------------------------------------------------- sampling
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", SAMPLING_METHODS)
def test_every_sample_is_valid_and_canonical(family, method):
    space = space_of(family)
    vectors = space.sample_vectors(150, seed=3, method=method)
    assert vectors.shape == (150, space.n_var) and vectors.dtype == np.int64
    assert space.is_valid(vectors).all()
    np.testing.assert_array_equal(vectors, space.canonical(vectors))
    archs = space.sample(150, seed=3, method=method)
    assert len(archs) == 150
    for arch, vec in zip(archs, vectors, strict=True):
        assert arch.family == family and set(arch.d) <= {2, 3, 4}
        np.testing.assert_array_equal(space.to_vector(arch), vec)


@pytest.mark.parametrize("method", SAMPLING_METHODS)
def test_sampling_is_deterministic_by_seed(method):
    space = space_of("EE_DP")
    assert space.sample(20, seed=7, method=method) == space.sample(20, seed=7, method=method)
    assert space.sample(20, seed=7, method=method) != space.sample(20, seed=8, method=method)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    assert space.sample(5, seed=rng_a, method=method) == space.sample(5, seed=rng_b, method=method)
    assert space.sample(0, method=method) == []


def depth_frequencies(space, method, repair=None, n=4000):
    archs = space.sample(n, seed=0, method=method, repair=repair)
    depths = np.array([a.d for a in archs]).ravel()
    return {d: float(np.mean(depths == d)) for d in (2, 3, 4)}


def test_balanced_depth_distribution_is_one_third_two_ninths_four_ninths():
    freq = depth_frequencies(space_of(), "balanced")
    # P(skip) = 1/3 in slots 3 and 4, then fill: d=2 1/3, d=3 2/3*1/3 = 2/9, d=4 4/9
    for d, expected in {2: 1 / 3, 3: 2 / 9, 4: 4 / 9}.items():
        assert abs(freq[d] - expected) < 0.015, (d, freq)


def test_balanced_with_push_repair():
    freq = depth_frequencies(space_of(), "balanced", repair="push", n=2000)
    # push keeps both non-zero draws: d=2 1/9, d=3 4/9, d=4 4/9
    for d, expected in {2: 1 / 9, 3: 4 / 9, 4: 4 / 9}.items():
        assert abs(freq[d] - expected) < 0.02, (d, freq)


def test_depth_uniform_gives_one_third_each():
    freq = depth_frequencies(space_of(), "depth_uniform", n=2000)
    for d in (2, 3, 4):
        assert abs(freq[d] - 1 / 3) < 0.02, (d, freq)


def test_uniform_depth_distribution_is_nat_like():
    freq = depth_frequencies(space_of(), "uniform", n=2000)
    # P(0) = 1/10 per optional slot, push: d=2 1%, d=3 18%, d=4 81%
    for d, expected in {2: 0.01, 3: 0.18, 4: 0.81}.items():
        assert abs(freq[d] - expected) < 0.025, (d, freq)


def test_uniform_sampling_covers_heads():
    space = space_of("EE_B")
    X = space.sample_vectors(2000, seed=1)
    assert (
        set(X[:, 0]) == set(range(17))
        and set(X[:, 1]) == {0, 1}
        and set(X[:, -1]) == set(range(1, 6))
    )
    codes = X[:, 2:22]
    assert set(codes[:, 0]) == set(range(1, 10))


def test_bad_sampling_arguments():
    space = space_of()
    with pytest.raises(ValueError, match="sampling method"):
        space.sample(3, method="sobol")
    with pytest.raises(ValueError, match="n: value -1"):
        space.sample(-1)
    with pytest.raises(ValueError, match="repair method"):
        space.sample(3, repair="shove")
