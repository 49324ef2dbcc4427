"""Warm start of an OFAv2 super-network (any of the 8 families) from OFA MobileNetV3 weights.

Every OFAv2 family keeps OFA's tensors under OFA's keys (see :mod:`.ofa_mbv3`): the stem, the
fixed first block, the elastic MBConv blocks (``blocks.N.conv.*``) and the head, which is the
*last* exit of the EE families. Those are copied from the checkpoint; the parts OFA lacks --
the P families' ``conv1x1`` / ``transform`` branches and the EE families' ``early_exits.0..3``
-- keep their fresh initialisation.

Consequences (tested): an ``EE_B`` net warm-started from OFA computes OFA's logits for every
sub-network with ``nd = 5``, a ``SE_P`` / ``EE_P`` net does for ``nw`` = MBConv only; ``D``
nets get every tensor but compute another function (the dense sums are new).

The thesis does **not** start from OFA's weights: its ``full`` task (``run_ofa_nd.py``) trains
the largest network from OFA's ``he_fout`` initialisation (``OFA_mbv3_extended/train/utils.py``
``assign_run_args``: ``args.model_init = "he_fout"``, applied by the run manager), and every later
progressive-shrinking task loads the previous task's checkpoint of the same OFAv2 family. A warm
start from OFA's released MobileNetV3 is natv2's (an option of ``supernet.source``), and the
mapping here is ours (by key, strict about shapes).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from natv2.errors import UserError

from .checkpoint import STATIC_FORMAT, SUPERNET_FORMAT, _read, map_state_dict
from .ofa_mbv3 import SuperNet


def _ofa_state_dict(payload: Mapping) -> Mapping[str, Any]:
    """The OFA-layout state dict inside ``payload``: raw, OFA's ``{"state_dict": ...}`` wrapper,
    or one of our ``natv2-supernet`` checkpoints of family ``SE_B`` (which is OFA's layout)."""
    fmt = payload.get("format")
    if fmt == SUPERNET_FORMAT:
        family = payload.get("config", {}).get("family")
        if family != "SE_B":
            raise UserError(f"warm start needs an OFA MobileNetV3 (SE_B) checkpoint; this one "
                            f"is for family {family}: load it with load_checkpoint into a "
                            f"{family} super-network")
        return payload["state_dict"]
    if fmt == STATIC_FORMAT:
        raise UserError("warm start needs a super-network checkpoint, not an extracted "
                        "(natv2-static) network")
    inner = payload.get("state_dict")
    return inner if isinstance(inner, Mapping) else payload


def warm_start_from_ofa(net: SuperNet, source: str | os.PathLike | Mapping) -> dict[str, Any]:
    """Copy every tensor ``net`` shares with OFA MobileNetV3 from ``source`` (a path or a dict;
    OFA's current and older key layouts, mapped as :func:`.checkpoint.load_checkpoint` does).

    Strict like ``load_checkpoint``: a key ``net`` has no OFA counterpart for, a wrong shape
    (a checkpoint of another width or class count) or a missing key raises ``UserError``
    naming the first offending key. Returns ``{"copied": number of tensors copied,
    "new_modules": modules left at their fresh initialisation, "skipped": shared keys the
    checkpoint lacks and that were left as they were (only ``num_batches_tracked``)}``.
    """
    if not isinstance(net, SuperNet):
        raise TypeError(f"warm start needs a SuperNet, got {type(net).__name__}")
    state = _ofa_state_dict(_read(source))
    new_modules = net.new_module_names()
    prefixes = tuple(f"{name}." for name in new_modules)
    full = net.state_dict()
    shared = {k: v for k, v in full.items() if not k.startswith(prefixes)}
    mapped = map_state_dict(state, shared)
    # map_state_dict fills a missing num_batches_tracked with the network's own value
    given = {k for k in mapped if mapped[k] is not shared[k]}
    skipped = [k for k in shared if k not in given]
    with torch.no_grad():
        for key in given:
            full[key].copy_(mapped[key])
    return {"copied": len(given), "new_modules": new_modules, "skipped": skipped}
