"""Where a super-network comes from: the ``supernet.source`` kinds, and everything about them.

This module owns the facts of a checkpoint *source* (the ``supernet`` stage only calls it):

* the kinds (:data:`SOURCE_KINDS`): ``train`` (nothing to fetch: the stage trains from scratch),
  ``{pretrained: NAME}`` (the registry below), ``{url: URL, sha256: HEX|null}`` (downloaded
  into the cache directory by :mod:`.download`) and ``{file: PATH}`` -- :func:`source_kind`,
  :func:`fetch_source`;
* the registry of released checkpoints (:data:`PRETRAINED`, :func:`pretrained`);
* the size of a checkpoint's classifier -- :func:`checkpoint_classes` (the file is read by
  :func:`.checkpoint.read_payload`, the one safe reader: ``torch.load(weights_only=True)``,
  one-line errors for a file torch cannot read);
* building the configured family and loading the checkpoint into it, every tensor, or a warm
  start from OFA's weights for an OFAv2 family (:mod:`.warm_start`) -- :func:`load_source_supernet`;
  a raw state dict that fits neither is refused in one line naming what it is: which of the 8
  families (by keys and shapes; ``B`` / ``D`` and ``P`` / ``DP`` hold the same tensors, so both
  are named), its width_mult and class count;
* the head decision: a checkpoint of another label set gets a fresh classifier (and, in the
  stage, NATv2's warm-up) -- :func:`fit_head`.

:func:`open_source` strings these together for the stage. Checkpoint formats and strict
loading live in :mod:`.checkpoint`.

OFA's MobileNetV3 super-networks (Cai et al.) are registered from the URLs the reference ``ofa``
package uses. Their sha256 is not pinned here: this project's machines cannot reach the host to
compute it, and we do not type hashes we have not measured. The hash of what was downloaded is
always recorded in ``supernet.json``; pin it with ``{url: ..., sha256: ...}`` to make later
downloads verified.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from natv2.errors import UserError

from .checkpoint import (
    STATIC_FORMAT,
    SUPERNET_FORMAT,
    Mismatch,
    load_checkpoint,
    mismatches,
    raw_state_dict,
    read_payload,
)
from .download import default_cache_dir, download, sha256_of
from .families import FAMILIES, WIDTH_MULTS, build_supernet
from .ofa_mbv3 import SuperNet
from .warm_start import warm_start_from_ofa

#: the values of ``supernet.source``: the string ``"train"`` or a mapping with one of the others
SOURCE_KINDS: tuple[str, ...] = ("train", "pretrained", "url", "file")

_OFA_BASE = "https://raw.githubusercontent.com/han-cai/files/master/ofa/ofa_nets/"


@dataclass(frozen=True)
class Pretrained:
    name: str
    url: str
    family: str
    width_mult: float
    n_classes: int
    sha256: str | None = None


PRETRAINED: dict[str, Pretrained] = {
    p.name: p
    for p in (
        Pretrained("ofa_mbv3_d234_e346_k357_w1.0", _OFA_BASE + "ofa_mbv3_d234_e346_k357_w1.0", "SE_B", 1.0, 1000),
        Pretrained("ofa_mbv3_d234_e346_k357_w1.2", _OFA_BASE + "ofa_mbv3_d234_e346_k357_w1.2", "SE_B", 1.2, 1000),
    )
}


def pretrained(name: str) -> Pretrained:
    """The registry entry for ``name``; an unknown name is an error listing the valid ones."""
    try:
        return PRETRAINED[name]
    except KeyError:
        raise UserError(f"unknown pretrained super-network '{name}'; valid: {', '.join(PRETRAINED)}") from None


def source_kind(source: Any) -> str:
    """Which of :data:`SOURCE_KINDS` ``source`` is; anything else is a ``UserError``."""
    if source == "train":
        return "train"
    if isinstance(source, Mapping):
        for kind in SOURCE_KINDS[1:]:
            if kind in source:
                return kind
    raise UserError(f"supernet.source: {source!r} is not train, {{pretrained: NAME}}, {{url: URL}} or {{file: PATH}}")


def fetch_source(source: Any, cache_dir: str | None, show_progress: bool = True) -> tuple[Path, str, dict]:
    """Local path, sha256 and a JSON description of a non-``train`` source.

    The description of a downloaded source has ``"downloaded": True`` when this call wrote the
    file into the cache (it was not there, verified, already).
    """
    kind = source_kind(source)
    if kind == "train":
        raise UserError("supernet.source: train has no checkpoint to fetch")
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if kind == "pretrained":
        entry = pretrained(source["pretrained"])
        dest = cache / entry.name
        had = dest.exists()
        got = download(entry.url, dest, sha256=entry.sha256, show_progress=show_progress)
        return got.path, got.sha256, {"kind": "pretrained", "name": entry.name, "url": entry.url,
                                      "downloaded": not had}
    if kind == "url":
        url = source["url"]
        name = hashlib.sha256(url.encode()).hexdigest()[:16] + "-" + url.rstrip("/").rsplit("/", 1)[-1]
        dest = cache / name
        had = dest.exists()
        got = download(url, dest, sha256=source.get("sha256"), show_progress=show_progress)
        return got.path, got.sha256, {"kind": "url", "url": url, "downloaded": not had}
    path = Path(source["file"]).expanduser()
    if not path.is_file():
        raise UserError(f"supernet.source.file: '{path}' does not exist; point it at a checkpoint file")
    return path, sha256_of(path), {"kind": "file", "file": str(path)}


def checkpoint_classes(payload: Mapping) -> int:
    """Number of classes of a checkpoint's classifier (ours: its config; OFA's: the weight shape)."""
    if payload.get("format") == SUPERNET_FORMAT:
        return int(payload["config"]["n_classes"])
    n_classes = state_classes(raw_state_dict(payload))
    if n_classes is None:
        raise UserError("checkpoint has no classifier weight (expected a 'classifier.*weight' key)")
    return n_classes


def state_classes(state: Mapping[str, Any]) -> int | None:
    """Rows of the classifier weight (``classifier.*weight``) of a raw state dict; None without."""
    for key, value in state.items():
        if key.startswith("classifier.") and key.endswith("weight") and hasattr(value, "shape"):
            return int(value.shape[0])
    return None


def load_source_supernet(path: Path, build: Mapping[str, Any]) -> tuple[SuperNet, dict]:
    """Build the configured family (``build``: the keyword arguments of ``build_supernet`` but
    ``n_classes``, which is the checkpoint's) and load ``path`` into it; returns (net, load report).

    One of our ``natv2-supernet`` checkpoints: every tensor, checked for family, width and lists;
    of family ``SE_B`` (OFA's layout) for an OFAv2 family: a warm start. A raw state dict (plain,
    ``{"state_dict": ...}``, ``module.``-prefixed): every tensor when its keys and shapes are the
    configured network's, a warm start when they are ``SE_B``'s and an OFAv2 family is
    configured, else a one-line ``UserError`` saying what super-network it holds
    (:func:`_what_raw_is`). A checkpoint of another class count is no error: :func:`fit_head`.
    """
    payload = read_payload(path)
    fmt = payload.get("format")
    if fmt == STATIC_FORMAT:
        raise UserError(f"checkpoint '{path}' holds an extracted sub-network ({STATIC_FORMAT}), "
                        f"not a super-network: supernet.source needs a super-network checkpoint")
    several = isinstance(build["width_mult"], list | tuple)
    if several and (fmt != SUPERNET_FORMAT
                    or payload.get("config", {}).get("family") != build["family"]):
        raise UserError(f"checkpoint '{path}' is not a natv2 {build['family']} super-network of "
                        f"the widths {list(build['width_mult'])}: give supernet.source a list of "
                        f"one checkpoint per width, in increasing width order")
    if fmt != SUPERNET_FORMAT:
        return _load_raw(path, raw_state_dict(payload), build)
    net = build_supernet(**build, n_classes=checkpoint_classes(payload))
    if build["family"] == "SE_B" or payload.get("config", {}).get("family") != "SE_B":
        load_checkpoint(net, payload)
        return net, {"loaded": "all tensors"}
    return net, warm_start_from_ofa(net, payload)


_Layouts = Callable[[str, float], Mapping[str, torch.Tensor]]


def _load_raw(path: Path, state: Mapping[str, Any], build: Mapping[str, Any]
              ) -> tuple[SuperNet, dict]:
    """A raw state dict into the configured family: every tensor, a warm start, or refused."""
    odd = [repr(k) for k, v in state.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if odd:
        raise UserError(f"checkpoint '{path}' holds a dict with entries that are not named "
                        f"tensors ({', '.join(odd[:3])}{', ...' if len(odd) > 3 else ''}), not a "
                        f"state_dict: give a raw state_dict or {{\"state_dict\": ...}}")
    n_classes = state_classes(state)
    if n_classes is None:
        raise UserError(f"checkpoint '{path}' holds a raw state_dict of {len(state)} tensor"
                        f"{'s' if len(state) != 1 else ''} "
                        f"without a classifier weight ('classifier.*weight'): no super-network "
                        f"of the 8 families")
    net = build_supernet(**build, n_classes=n_classes)
    if not mismatches(state, net):
        load_checkpoint(net, state)
        return net, {"loaded": "all tensors"}
    layouts = _layouts(build, n_classes, net)
    if build["family"] != "SE_B" and not mismatches(state, layouts("SE_B", build["width_mult"])):
        return net, warm_start_from_ofa(net, state)
    raise UserError(_what_raw_is(path, state, build, n_classes, layouts))


def _layouts(build: Mapping[str, Any], n_classes: int, net: SuperNet) -> _Layouts:
    """``(family, width_mult) -> state dict`` of that super-network with the configured lists
    and ``n_classes`` (tensors on the meta device: shapes only), each built once per call."""
    cache = {(net.family, float(net.width_mult)): net.state_dict()}

    def layout(family: str, width_mult: float) -> Mapping[str, torch.Tensor]:
        key = (family, float(width_mult))
        if key not in cache:
            with torch.device("meta"):
                cache[key] = build_supernet(**{**build, "family": family, "width_mult": width_mult},
                                            n_classes=n_classes).state_dict()
        return cache[key]

    return layout


def _what_raw_is(path: Path, state: Mapping[str, Any], build: Mapping[str, Any], n_classes: int,
                 layouts: _Layouts) -> str:
    """One line saying which of the 8 families (width_mult, classes) the raw state dict
    ``state`` is, versus the configured one, and what to do; identified by keys and shapes.
    Another family or width fits the CLI's line limit whole with a path of 64 characters."""
    family, width = build["family"], float(build["width_mult"])
    found = {f: mismatches(state, layouts(f, width)) for f in FAMILIES}
    keyed = [f for f in FAMILIES if all(m.kind == "shape" for m in found[f])]
    if keyed:
        for other in _widths(width):
            same = [f for f in keyed if not mismatches(state, layouts(f, other))]
            if same:
                return _other_network(path, same, other, n_classes, family, width)
        widths = " or ".join(str(w) for w in _widths(width))
        return (f"checkpoint '{path}' holds a raw state_dict with the keys of {_an(keyed)} "
                f"super-network, not the shapes of width_mult {widths} with the configured lists (first: {found[keyed[0]][0].key!r}): set "
                f"supernet.ks_list and expand_list as it was built")
    fewest = min(len(m) for m in found.values())
    nearest = [f for f in FAMILIES if len(found[f]) == fewest]
    plural = "s" if fewest > 1 else ""
    return (f"checkpoint '{path}' holds a raw state_dict of none of the 8 families at the "
            f"configured width_mult and lists (nearest: {' or '.join(nearest)}, {fewest} "
            f"difference{plural}, first {_short(found[nearest[0]][0])}): use {_an([family])} "
            f"checkpoint built with these")


_KIND_WORDS = {"type": "non-tensor", "unexpected": "unexpected", "duplicate": "duplicate",
               "shape": "mis-shaped", "missing": "missing"}


def _short(mismatch: Mismatch) -> str:
    """``unexpected key 'x'`` and the like: a difference in a few words."""
    return f"{_KIND_WORDS[mismatch.kind]} key {mismatch.key!r}"


def _widths(width: float) -> tuple[float, ...]:
    """The configured width first, then the released ones (:data:`.families.WIDTH_MULTS`)."""
    return (width, *(w for w in WIDTH_MULTS if w != width))


def _an(families: list[str]) -> str:
    """``an SE_P`` / ``an SE_B or SE_D`` (every family name starts with a vowel sound)."""
    return "an " + " or ".join(families)


def _other_network(path: Path, families: list[str], width: float, n_classes: int,
                   want_family: str, want_width: float) -> str:
    """The refusal of a raw state dict of ``families`` at ``width`` for the configured network;
    ``families`` hold the same tensors (``B`` / ``D``, ``P`` / ``DP``), so both are named."""
    what = (f"checkpoint '{path}' holds a raw state_dict of {_an(families)} super-network "
            f"(width_mult {width}, {n_classes} classes)")
    set_family = f"supernet.family: {' or '.join(families)}"
    if len(families) > 1:
        set_family += " (whichever it was trained as)"
    if want_family in families or (want_family != "SE_B" and "SE_B" in families):  # or warm start
        return (f"{what}; the config asks for {want_family} with width_mult {want_width}: set "
                f"supernet.width_mult: {width} or use a width_mult {want_width} checkpoint")
    if width == want_width:
        return (f"{what}; the config asks for {want_family}: set {set_family} or use "
                f"{_an([want_family])} checkpoint")
    return (f"{what}; the config asks for {want_family} with width_mult {want_width}: set "
            f"supernet.family: {' or '.join(families)} and width_mult: {width}, or use another "
            f"checkpoint")


def fit_head(net: SuperNet, n_classes: int) -> bool:
    """Give ``net`` a fresh classifier when its checkpoint's classifies another number of classes
    than ``n_classes`` (the dataset's); True when it did (the new head then needs a warm-up)."""
    if net.n_classes == n_classes:
        return False
    net.replace_classifier(n_classes)
    return True


class Opened(NamedTuple):
    """A source made ready: the loaded super-network (``None`` for ``train``: nothing to load),
    its load report, the JSON description of the source and the sha256 of its file."""

    net: SuperNet | None
    load: dict | None
    info: dict
    sha256: str | None


def open_source(source: Any, cache_dir: str | None, build: Mapping[str, Any],
                show_progress: bool = True) -> Opened:
    """Fetch, verify and load ``source`` (see :func:`fetch_source`, :func:`load_source_supernet`).

    A file this call downloaded and that cannot be loaded is removed from the cache again.
    """
    if source_kind(source) == "train":
        return Opened(None, None, {"kind": "train"}, None)
    path, sha, info = fetch_source(source, cache_dir, show_progress)
    downloaded = info.pop("downloaded", False)
    try:
        net, load = load_source_supernet(path, build)
    except UserError:
        if downloaded:  # a file this run fetched and cannot use
            path.unlink(missing_ok=True)
        raise
    return Opened(net, load, info, sha)
