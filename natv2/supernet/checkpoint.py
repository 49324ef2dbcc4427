"""Checkpoints: OFA's released layouts and our own format, loaded strictly.

Accepted inputs of :func:`load_checkpoint`:

* a raw ``state_dict`` (OFA's current key layout == ours, see ``ofa_mbv3.py``);
* ``{"state_dict": ...}`` as in OFA's released ``ofa_mbv3_d234_e346_k357_w1.0`` / ``w1.2``;
* our format written by :func:`save_checkpoint`:
  ``{"format": "natv2-supernet" | "natv2-static", "config": ..., "state_dict": ..., "extra": ...}``.

Older OFA layouts are mapped by :data:`LEGACY_RENAMES`, the renames of OFA's own
``OFAMobileNetV3.load_state_dict``: ``.mobile_inverted_conv.`` -> ``.conv.`` first, then, for a
key our network lacks, the first rule whose result it has. A leading ``module.``
(``DataParallel``) is dropped when every key has it.

Strictness (departure from OFA, which asserts or silently keeps defaults): an unexpected key,
a wrong shape or a missing key raises ``ValueError`` naming the first offending key (checkpoint
order for unexpected/shape, network order for missing). The one tolerated gap is
``num_batches_tracked`` (absent from some old files, irrelevant with a fixed BN momentum).
:func:`mismatches` lists every difference instead (how :mod:`.sources` tells which of the 8
families a raw state dict is).
"""

from __future__ import annotations

import io
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from natv2.errors import UserError
from natv2.files import atomic_write, first_line, without_timings

from .ofa_mbv3 import SuperNet
from .static import STATIC_FORMAT, StaticNet, build_static
from .widths import WidthSuperNets

SUPERNET_FORMAT = "natv2-supernet"
FORMAT_VERSION = 1

#: what ``torch.load(path, weights_only=True)`` raises for a file it cannot read: I/O errors, a
#: broken zip archive (``RuntimeError`` from torch's reader, or ``zipfile``'s), an empty or cut
#: stream (``EOFError``), a refused or corrupt pickle -- torch's weights-only unpickler wraps only
#: ``UnpicklingError``; a corrupt opcode stream also surfaces as ``KeyError`` / ``IndexError``
#: (memo, stack), ``struct.error`` or ``UnicodeDecodeError`` (measured on torch 2.x). Anything
#: else is a bug and keeps its traceback.
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile,
    KeyError, IndexError, struct.error, UnicodeDecodeError,
)

#: OFA's ``OFAMobileNetV3.load_state_dict`` fall-back renames, tried in this order
LEGACY_RENAMES: tuple[tuple[str, str], ...] = (
    (".bn.bn.", ".bn."),
    (".conv.conv.weight", ".conv.weight"),
    (".linear.linear.", ".linear."),
    (".linear.", ".linear.linear."),
    ("bn.", "bn.bn."),
    ("conv.weight", "conv.conv.weight"),
)

# config entries that decide which weights exist and what they mean
_STRUCTURAL_KEYS = ("family", "width_mult", "ks_list", "expand_list", "depth_list")


def read_payload(path: str | os.PathLike) -> Mapping:
    """The dict inside checkpoint file ``path``, read with ``torch.load(weights_only=True)``.

    A missing file, a file torch cannot read (:data:`READ_ERRORS`) or one that holds no dict is
    a ``UserError`` saying which file and why, in one line.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except READ_ERRORS as exc:
        raise UserError(f"cannot read checkpoint '{path}': {unreadable_reason(path, exc)}") from None
    if not isinstance(payload, Mapping):
        raise UserError(f"checkpoint '{path}' holds a {type(payload).__name__}, not a state dict")
    return payload


_ZIP, _PICKLE = b"PK\x03\x04", b"\x80"  # torch's zip format; a legacy pickle's PROTO opcode


def unreadable_reason(path: Path, exc: BaseException) -> str:
    """What the file ``torch.load(weights_only=True)`` refused is, in a few words: never
    PyTorch's own advice, which is to switch the protection off."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    text = head.lstrip().lower()
    if not head:
        return "the file is empty (0 bytes), not a checkpoint"
    if text.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")):
        return ("the file is a web page (it starts with "
                f"{head.lstrip()[:15].decode('ascii', 'replace')!r}), not a checkpoint: the server sent a "
                "login or error page instead of the file")
    found = re.search(r"GLOBAL \w[\w.]*", str(exc))
    if found:  # weights_only's unpickler met a reference to code
        return (f"the file is a pickle that needs code beyond tensors to load ({found.group(0)}); natv2 "
                "refuses it and never runs it: use a checkpoint that holds only tensors (a state_dict)")
    cause = _cause(exc)
    if head.startswith(_ZIP):
        return f"the PyTorch file is cut or damaged ({cause})"
    if head.startswith(_PICKLE) and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return f"the pickle is cut or damaged ({cause})"
    return f"the file is not a PyTorch checkpoint (it starts with {head[:8]!r})"


def _cause(exc: BaseException) -> str:
    """The first sentence of torch's error, or of its unpickler's when torch wrapped that in its
    advice to load with ``weights_only=False`` (never repeated to the user)."""
    inner = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
    text = inner.group(1) if inner else first_line(exc)
    return text.split(". ")[0].strip()


def _read(source: str | os.PathLike | Mapping) -> Mapping:
    return source if isinstance(source, Mapping) else read_payload(source)


def _state_dict_of(payload: Mapping, net: nn.Module) -> Mapping[str, Any]:
    fmt = payload.get("format")
    if fmt in (SUPERNET_FORMAT, STATIC_FORMAT):
        want = SUPERNET_FORMAT if isinstance(net, SuperNet | WidthSuperNets) else STATIC_FORMAT
        if fmt != want:
            raise UserError(f"checkpoint format is {fmt!r} but the network needs {want!r}")
        if fmt == SUPERNET_FORMAT:
            _check_config(payload.get("config", {}), net.config())
        return payload["state_dict"]
    inner = payload.get("state_dict")
    if isinstance(inner, Mapping):
        return inner  # OFA's released {"state_dict": ..., ...} wrapper
    return payload


def _check_config(saved: Mapping, current: Mapping) -> None:
    """Refuse, in one line, a checkpoint of another family / width / choice lists."""
    fam, width = saved.get("family", current["family"]), saved.get("width_mult",
                                                                    current["width_mult"])
    if fam != current["family"] or _canon(width) != _canon(current["width_mult"]):
        raise UserError(f"checkpoint is for family {fam}, width_mult={width}; this "
                        f"super-network is {current['family']}, "
                        f"width_mult={current['width_mult']}")
    for key in _STRUCTURAL_KEYS:
        if key in saved and _canon(saved[key]) != _canon(current[key]):
            raise UserError(f"checkpoint is for {key}={saved[key]!r}, the network has "
                            f"{key}={current[key]!r}")


def _canon(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return sorted(float(v) for v in value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def _candidates(key: str) -> list[str]:
    key = key.replace(".mobile_inverted_conv.", ".conv.")
    return [key] + [key.replace(old, new) for old, new in LEGACY_RENAMES if old in key]


class Mismatch(NamedTuple):
    """One way a state dict differs from a network's keys and shapes: ``kind`` is ``type``,
    ``unexpected``, ``duplicate``, ``shape`` or ``missing``; ``key`` the key it is about; ``text``
    one line on it and ``hint`` what it may mean (:func:`map_state_dict` raises both)."""

    kind: str
    key: str
    text: str
    hint: str = ""


def raw_state_dict(payload: Mapping) -> Mapping[str, Any]:
    """The state dict of a file that is not one of ours: ``payload`` itself, or OFA's
    ``{"state_dict": ...}`` wrapper's, without a ``module.`` prefix every key has."""
    inner = payload.get("state_dict")
    state = inner if isinstance(inner, Mapping) else payload
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def mismatches(state_dict: Mapping[str, Any],
               net: nn.Module | Mapping[str, torch.Tensor]) -> list[Mismatch]:
    """Every way ``state_dict`` (renamed as :func:`map_state_dict` does) differs from ``net``'s
    keys and shapes, in the order ``map_state_dict`` meets them; empty when it loads."""
    return _map(state_dict, net)[1]


def _map(state_dict: Mapping[str, Any], net: nn.Module | Mapping[str, torch.Tensor]
         ) -> tuple[dict[str, torch.Tensor], list[Mismatch]]:
    """The tensors of ``state_dict`` under ``net``'s keys that fit, and every mismatch."""
    target = net.state_dict() if isinstance(net, nn.Module) else net
    keys = list(state_dict)
    if keys and all(k.startswith("module.") for k in keys):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    mapped: dict[str, torch.Tensor] = {}
    source_of: dict[str, str] = {}
    found: list[Mismatch] = []
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            found.append(Mismatch("type", key, f"checkpoint entry {key!r} is a "
                                               f"{type(value).__name__}, not a tensor"))
            continue
        new = next((c for c in _candidates(key) if c in target), None)
        if new is None:
            found.append(Mismatch("unexpected", key, f"unexpected key {key!r} in checkpoint",
                                  ": the network has no such parameter or buffer"))
            continue
        if new in source_of:
            found.append(Mismatch("duplicate", key, f"checkpoint keys {source_of[new]!r} and "
                                                    f"{key!r} both map to {new!r}"))
            continue
        source_of[new] = key
        if tuple(value.shape) != tuple(target[new].shape):
            found.append(Mismatch("shape", key, f"shape mismatch for key {key!r}: checkpoint "
                                                f"{tuple(value.shape)} vs network "
                                                f"{tuple(target[new].shape)}",
                                  " (a checkpoint for another width_mult or n_classes?)"))
            continue
        mapped[new] = value
    for key, value in target.items():
        if key not in source_of:
            if key.endswith("num_batches_tracked"):
                mapped[key] = value
            else:
                found.append(Mismatch("missing", key, f"missing key {key!r} in checkpoint"))
    return mapped, found


def map_state_dict(state_dict: Mapping[str, Any],
                   net: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of ``state_dict`` renamed to ``net``'s, every shape checked; raises ``UserError``
    (naming the first offending key) on unexpected, duplicate, mis-shaped or missing keys.

    ``net`` may also be a mapping ``key -> tensor`` standing for the wanted keys and shapes
    (e.g. the part of an OFAv2 super-network that OFA's checkpoints hold, see
    :mod:`.warm_start`)."""
    mapped, found = _map(state_dict, net)
    if found:
        raise UserError(found[0].text + found[0].hint)
    return mapped


def load_checkpoint(net: nn.Module, source: str | os.PathLike | Mapping) -> nn.Module:
    """Load weights into ``net`` (a ``SuperNet`` or a ``StaticNet``) from a path or a dict;
    returns ``net``. Files are read safely (``torch.load`` with ``weights_only=True``, on the
    CPU). See the module docstring for the accepted layouts."""
    payload = _read(source)
    state = map_state_dict(_state_dict_of(payload, net), net)
    net.load_state_dict(state, strict=True)
    return net


def _check_plain(value: Any, where: str) -> None:
    """``extra`` must survive ``weights_only=True`` loading: plain containers and scalars."""
    if value is None or isinstance(value, str | int | float | bool | torch.Tensor):
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str | int):
                raise TypeError(f"{where} has a non-str/int key {k!r}")
            _check_plain(v, f"{where}[{k!r}]")
        return
    raise TypeError(f"{where} is a {type(value).__name__}; only dict/list/str/number/bool/"
                    f"None/tensor can be saved")


def save_checkpoint(net: nn.Module, path: str | os.PathLike, extra: Any = None) -> Path:
    """Write ``{"format", "version", "config", "state_dict", "extra"}`` atomically (temp file in
    the same folder, then ``os.replace``). Works for a ``SuperNet`` (format ``natv2-supernet``)
    (or a ``WidthSuperNets``, one file for all its widths) and a ``StaticNet`` (format
    ``natv2-static``). Returns the path.

    The bytes depend only on the weights, config and ``extra`` without its wall times
    (``seconds`` keys are dropped; they belong in the stage's JSON): a rerun that computes the
    same weights writes the same file, so every cache keyed by its sha256 stays valid."""
    _check_plain(extra, "extra")
    fmt = SUPERNET_FORMAT if isinstance(net, SuperNet | WidthSuperNets) else STATIC_FORMAT
    if fmt == STATIC_FORMAT and not isinstance(net, StaticNet):
        raise TypeError(f"cannot save a {type(net).__name__}; expected SuperNet or StaticNet")
    payload = {
        "format": fmt,
        "version": FORMAT_VERSION,
        "config": net.config(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "extra": without_timings(extra),
    }
    # through memory: torch names the zip's folder after the file it writes to (here a random
    # temporary name), so the same weights would give other bytes, and another sha256, each run
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path = Path(path)
    atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))
    return path


def read_extra(path: str | os.PathLike) -> Any:
    """The ``extra`` entry of one of our checkpoints (None for other files)."""
    payload = _read(path)
    return payload.get("extra") if payload.get("format") in (SUPERNET_FORMAT,
                                                              STATIC_FORMAT) else None


def load_supernet(path: str | os.PathLike | Mapping) -> SuperNet | WidthSuperNets:
    """Build the super-network described by one of our ``natv2-supernet`` checkpoints and load
    its weights (OFA's files carry no config: use ``build_supernet`` + ``load_checkpoint``); a
    file of several widths gives a ``WidthSuperNets``."""
    from .families import build_supernet

    payload = _read(path)
    if payload.get("format") != SUPERNET_FORMAT:
        raise UserError(f"{path if not isinstance(path, Mapping) else 'checkpoint'} is not a "
                        f"{SUPERNET_FORMAT} checkpoint; build the network with build_supernet "
                        f"and call load_checkpoint")
    net = build_supernet(**payload["config"])
    return load_checkpoint(net, payload)


def load_static(path: str | os.PathLike | Mapping) -> StaticNet:
    """Rebuild a static network saved by :func:`save_checkpoint` (format ``natv2-static``)."""
    payload = _read(path)
    if payload.get("format") != STATIC_FORMAT:
        raise UserError(f"not a {STATIC_FORMAT} checkpoint")
    net = build_static(payload["config"])
    return load_checkpoint(net, payload)
