"""Resolve the config's ``device`` value to a :class:`torch.device`."""

from __future__ import annotations

import re

import torch

from natv2.errors import UserError

_VALID = "valid: auto, cpu, cuda, cuda:N"


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when CUDA is available, else ``cpu``; ``cpu``; ``cuda``; ``cuda:N``.

    Asking for CUDA on a machine without it (or a GPU index that does not exist) is a
    ``ValueError`` too, so a misconfigured run fails at once rather than deep inside training.
    """
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str):
        raise UserError(f"device: value {name!r} is not a string; {_VALID}")
    value = name.strip().lower()
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", value)
    if not match:
        raise UserError(f"device: unknown value {name!r}; {_VALID}")
    if not torch.cuda.is_available():
        raise UserError(
            f"device: {name!r} requested but CUDA is not available here; use auto or cpu"
        )
    if match.group(1) is not None and int(match.group(1)) >= torch.cuda.device_count():
        raise UserError(
            f"device: {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    return torch.device(value)
