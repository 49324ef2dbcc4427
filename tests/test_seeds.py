"""natv2.seeds: the named streams keep the values every existing result depends on."""

import numpy as np
import pytest

from natv2 import seeds


def _legacy_sequence(seed, k, salt):
    return int(np.random.SeedSequence([seed, k, salt]).generate_state(1)[0] % (2**31 - 1))


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_legacy_streams_keep_their_values(seed):
    for k in range(4):
        assert seeds.round_seed(seed, k) == _legacy_sequence(seed, k, 0)
        assert seeds.adaptation_seed(seed, k) == _legacy_sequence(seed, k, 3)
        assert seeds.sample_seed(seed, k) == _legacy_sequence(seed, k, 17)
        assert seeds.fold_seed(seed, k) == seed + k
        assert seeds.phase_seed(seed, k) == 100 * seed + k
        assert seeds.epoch_seed(seed, k) == 1000 * seed + k
        assert seeds.finetune_seed(seed, k) == seed + 1000 + k
    assert seeds.warmup_seed(seed, "largest") == 100 * seed + 90
    assert seeds.warmup_seed(seed, "supernet") == 100 * seed + 91
    assert (seeds.step_seed(seed, 1), seeds.step_seed(seed, 2)) == (seed, seed + 1)


def test_derive_names_streams_apart():
    values = {seeds.derive(0, name, k) for name in ("a", "b", "evolution") for k in range(20)}
    assert len(values) == 60  # no collisions among 60 streams
    assert seeds.derive(0, "a") == seeds.derive(0, "a")  # strings hash stably
    assert seeds.derive(0, "a") != seeds.derive(1, "a")
    assert all(0 <= v < 2**31 - 1 for v in values)
    # unlike seed * 100 + index, two roots never share a stream by arithmetic
    assert seeds.derive(1, 100) != seeds.derive(2, 0)
