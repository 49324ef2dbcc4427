"""Every random stream of natv2, named, in one place.

A run has two root seeds: the top-level ``seed`` (data split, calibration subset, super-network
training, fine-tuning) and the search seed (``search.seed``, or ``seed`` when null: initial
samples, evolution, subset selection, archive survival, per-round adaptation). Every seed a
module draws with comes from one function below; no module does seed arithmetic of its own.

:func:`derive` is the rule for any new stream: a 31-bit value from numpy's ``SeedSequence`` over
the root seed and the stream's path of names and numbers (strings are hashed stably), so
streams are independent whatever their numbers. The older streams listed below keep the
arithmetic they were introduced with, because the archives and weights of every run so far
depend on those exact values (changing one changes results; do it with a results change):

==========================  =====================================================  =========
stream                      value                                                  used by
==========================  =====================================================  =========
``round_seed(s, k)``        SeedSequence([s, k, 0])                                predictor,
                                                                                   evolution,
                                                                                   subset, update
``adaptation_seed(s, k)``   SeedSequence([s, k, 3])                                adaptation
``sample_seed(s, t)``       SeedSequence([s, t, 17]) for attempt ``t``              sample_new
``fold_seed(s, i)``         ``s + i`` for CV fold ``i`` of the predictor ensemble  lgbm-small
``phase_seed(s, i)``        ``100 * s + i`` for EPS phase ``i``                    train_supernet
``warmup_seed(s, step)``    ``100 * s + 90`` (largest) / ``+ 91`` (super-network)  warm-up
``epoch_seed(s, e)``        ``1000 * s + e`` for epoch ``e`` of a phase            train_phase
``finetune_seed(s, rank)``  ``s + 1000 + rank`` (the stage's global torch seed)    finetune
``step_seed(s, step)``      ``s`` (step 1) / ``s + 1`` (step 2)                    finetune
==========================  =====================================================  =========

Newer streams, through :func:`derive`: ``calibration_augment_seed(s, r)`` = ``derive(s,
"bn-calibration", r)``, the augmentation drawn once per resolution ``r`` on the BN-calibration
subset (``natv2.data.splits.calibration_batches``); ``thesis_decoding_seed(s)`` = ``derive(s,
"thesis-decoding")``, the random blocks of ``search.decoding: thesis`` in the round seeded ``s``.
``reference_directions_seed()`` is the thesis' constant 42, for every search seed.

The data split and the calibration subset use the top-level ``seed`` itself (scikit-learn's
``random_state``, a torch generator), as does the global seeding of a stage process
(:func:`natv2.pipeline.context.setup_stage`: ``torch.manual_seed``, numpy's legacy generator for
libraries that still draw from it).
"""

from __future__ import annotations

import hashlib

import numpy as np

_MOD = 2**31 - 1


def _word(part: int | str) -> int:
    if isinstance(part, str):
        return int.from_bytes(hashlib.sha256(part.encode()).digest()[:4], "little")
    return int(part)


def derive(seed: int, *names: int | str) -> int:
    """A 31-bit seed for the stream ``names`` under root ``seed`` (``SeedSequence``)."""
    words = [int(seed), *(_word(n) for n in names)]
    return int(np.random.SeedSequence(words).generate_state(1)[0] % _MOD)


def calibration_augment_seed(seed: int, resolution: int) -> int:
    """The train augmentation of the BN-calibration subset at ``resolution``."""
    return derive(seed, "bn-calibration", int(resolution))


def reference_directions_seed() -> int:
    """The Riesz s-energy reference directions (NSGA-III's, and survival beyond two objectives):
    the thesis fixes 42 (``msunas.py`` ``select_solver``, ``nat.py`` / ``nat_new.py`` survival),
    whatever the search seed."""
    return 42


def thesis_decoding_seed(seed: int) -> int:
    """The random blocks of the thesis' decoding (``search.decoding: thesis``) in a round seeded
    ``seed`` (:func:`round_seed`)."""
    return derive(seed, "thesis-decoding")


def round_seed(seed: int, round_k: int) -> int:
    """Search round ``round_k``: predictor, evolution, subset selection, archive survival."""
    return derive(seed, int(round_k), 0)


def adaptation_seed(seed: int, round_k: int) -> int:
    """Super-network adaptation after search round ``round_k``."""
    return derive(seed, int(round_k), 3)


def sample_seed(seed: int, attempt: int) -> int:
    """Attempt ``attempt`` of drawing new distinct architectures (``policy.sample_new``)."""
    return derive(seed, int(attempt), 17)


def fold_seed(seed: int, fold: int) -> int:
    """The model of cross-validation fold ``fold`` of the LightGBM ensemble predictor."""
    return int(seed) + int(fold)


def phase_seed(seed: int, index: int) -> int:
    """EPS phase ``index`` (0-based in the family's phase plan)."""
    return int(seed) * 100 + int(index)


def warmup_seed(seed: int, step: str) -> int:
    """NATv2's warm-up of a pretrained super-network: ``largest`` then ``supernet``."""
    offsets = {"largest": 90, "supernet": 91}
    return int(seed) * 100 + offsets[step]


def epoch_seed(seed: int, epoch: int) -> int:
    """Shuffling and augmentation of epoch ``epoch`` of a training phase seeded ``seed``."""
    return int(seed) * 1000 + int(epoch)


def finetune_seed(seed: int, rank: int) -> int:
    """The global torch seed of the fine-tuning stage of slot ``rank``."""
    return int(seed) + 1000 + int(rank)


def step_seed(seed: int, step: int) -> int:
    """Fine-tuning step ``step`` (1: train with early stopping, 2: retrain on train+val)."""
    return int(seed) + (int(step) - 1)
