"""What every stage sets up from the config: device, threads, global seeds, the search space
(paths: :class:`natv2.layout.Layout`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from natv2.measure import resolve_device
from natv2.space import SearchSpace
from natv2.supernet.widths import width_list


def space_from_config(cfg: Mapping[str, Any]) -> SearchSpace:
    """The search space of the configured super-network(s): ``w`` ranges over
    ``supernet.width_mult`` (one super-network per width)."""
    sn = cfg["supernet"]
    return SearchSpace(
        family=sn["family"],
        resolutions=sorted(cfg["space"]["resolutions"]),
        widths=sorted(width_list(sn["width_mult"])),
        ks_list=tuple(sorted(sn["ks_list"])),
        expand_list=tuple(sorted(sn["expand_list"])),
        depth_list=tuple(sorted(sn["depth_list"])),
    )


def setup_stage(cfg: Mapping[str, Any], seed: int | None = None) -> torch.device:
    """Torch threads from ``threads``, global seeds (``seed``, default the config's), the device."""
    torch.set_num_threads(int(cfg["threads"]))
    seed = int(cfg["seed"]) if seed is None else int(seed)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (libraries that still draw from the legacy RNG)
    return resolve_device(cfg["device"])


def physical_memory() -> int | None:
    """Bytes of RAM of this machine (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (OSError, ValueError):
        return None


def check_search_fits(cfg: Mapping[str, Any]) -> None:
    """The configured initial archive fits the search space and this machine's memory
    (``Policy.check_fits``): checked by ``natv2 check-config`` and before round 0."""
    from natv2.search.policy import Policy

    Policy.from_config(cfg).check_fits(space_from_config(cfg), physical_memory())
