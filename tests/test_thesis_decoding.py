"""natv2.space.thesis_decoding: the thesis' decoding of zeros and its duplicate test, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from natv2.search.archive import records_to_archive
from natv2.search.policy import Policy
from natv2.search.round import propose
from natv2.space import SearchSpace
from natv2.space.thesis_decoding import has_inner_zero, has_zero_slot, thesis_decode, thesis_known

SPACE = SearchSpace(family="SE_B", resolutions=[16, 20, 24])


def vec(*stages, r=0):
    return np.array([r, 0, *[c for st in stages for c in st]], dtype=np.int64)


FULL = [1, 2, 3, 4]


def test_zero_masks_by_hand():
    pushed = vec([1, 2, 0, 0], FULL, FULL, FULL, FULL)
    inner = vec([1, 2, 0, 5], FULL, FULL, FULL, FULL)
    full = vec(FULL, FULL, FULL, FULL, FULL)
    X = np.stack([pushed, inner, full])
    assert has_zero_slot(SPACE, X).tolist() == [True, True, False]
    assert has_inner_zero(X).tolist() == [False, True, False]


def test_a_vector_without_inner_zeros_decodes_as_natv2():
    X = np.stack([vec([1, 2, 0, 0], FULL, [3, 3, 3, 0], FULL, FULL),
                  vec(FULL, FULL, FULL, FULL, FULL)])
    out = thesis_decode(SPACE, X, np.random.default_rng(0))
    np.testing.assert_array_equal(out, X)


def test_inner_zero_takes_the_first_slots_with_a_random_block():
    # stage 1 [1, 2, 0, 5]: depth 3 (three non-zero codes), active slots 1..3, the zero one a
    # random code; the 5 in slot 4 drops out. Stage 2 [6, 7, 0, 8] likewise.
    x = vec([1, 2, 0, 5], [6, 7, 0, 8], FULL, FULL, FULL)
    draws = set()
    for seed in range(40):
        out = thesis_decode(SPACE, x[None], np.random.default_rng(seed))[0]
        s1, s2 = out[2:6], out[6:10]
        assert s1[:2].tolist() == [1, 2] and s1[3] == 0 and 1 <= s1[2] <= SPACE.n_codes
        assert s2[:2].tolist() == [6, 7] and s2[3] == 0 and 1 <= s2[2] <= SPACE.n_codes
        np.testing.assert_array_equal(out[10:], x[10:])
        draws.add((int(s1[2]), int(s2[2])))
    assert len(draws) > 10  # random, not a fixed rule
    again = thesis_decode(SPACE, x[None], np.random.default_rng(3))
    np.testing.assert_array_equal(again, thesis_decode(SPACE, x[None], np.random.default_rng(3)))
    # natv2's canonical decoding keeps 1, 2, 5 and 6, 7, 8 instead
    assert SPACE.encode(x) != SPACE.encode(thesis_decode(SPACE, x[None], np.random.default_rng(0))[0])


def test_thesis_duplicate_test_drops_only_zero_free_known_vectors():
    full = vec(FULL, FULL, FULL, FULL, FULL)
    pushed = vec([1, 2, 0, 0], FULL, FULL, FULL, FULL)
    X = np.stack([full, pushed, full, vec(FULL, FULL, FULL, FULL, [4, 4, 4, 4])])
    strings = [SPACE.encode(x) for x in X]
    known = [strings[0], strings[1]]
    # row 0: known, no zero -> dropped; row 1: known but with zeros -> kept (the thesis' dicts
    # differ in the random zero slots); row 2 repeats row 0; row 3 new
    assert thesis_known(SPACE, X, strings, known).tolist() == [1, 3]


def _archive(n=12, seed=0):
    archs = SPACE.sample(n, seed=seed, method="uniform", repair="push")
    rng = np.random.default_rng(seed)
    records = [{"top1": float(rng.uniform(60, 90)), "params": int(rng.integers(10_000, 90_000)),
                "macs": int(rng.integers(100_000, 1_000_000))} for _ in archs]
    return records_to_archive(SPACE, archs, records, round_k=0, origin="init")


@pytest.mark.parametrize("option", [{}, {"decoding": "canonical"}, {"duplicates": "canonical"}])
def test_propose_with_each_decoding_and_duplicate_rule_is_deterministic(option):
    policy = Policy.preset("natv2", 12, ["top1", "params"], candidates=4, pop_size=20, n_gen=3,
                           subset_pop_size=20, subset_n_gen=5, **option)
    cheap = lambda X: np.array([[SPACE.decode(x).n_blocks] for x in X], dtype=float)  # noqa: E731
    a = propose(SPACE, _archive(), policy, cheap, seed=5)
    b = propose(SPACE, _archive(), policy, cheap, seed=5)
    assert [SPACE.encode(x) for x in a.archs] == [SPACE.encode(x) for x in b.archs]
    assert len(a.archs) == 4
    assert 0 <= a.describe()["inner_zero_candidates"] <= 4


def test_the_options_come_from_the_config_and_bad_values_are_refused():
    from natv2.config import validate
    from natv2.errors import UserError

    cfg = validate({"search": {"decoding": "canonical", "duplicates": "canonical"}})
    policy = Policy.from_config(cfg)
    assert (policy.decoding, policy.duplicates) == ("canonical", "canonical")
    for preset in ("natv2", "nat", "random"):  # the thesis' rules by default
        default = Policy.from_config(validate({"search": {"policy": preset}}))
        assert (default.decoding, default.duplicates) == ("thesis", "thesis")
    with pytest.raises(UserError, match="decoding"):
        validate({"search": {"decoding": "random"}})
