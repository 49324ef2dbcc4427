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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from natv2.errors import UserError

from .checkpoint import SUPERNET_FORMAT, load_checkpoint, read_payload
from .download import default_cache_dir, download, sha256_of
from .families import build_supernet
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
    state = payload.get("state_dict", payload)
    for key, value in state.items():
        if key.startswith("classifier.") and key.endswith("weight") and hasattr(value, "shape"):
            return int(value.shape[0])
    raise UserError("checkpoint has no classifier weight (expected a 'classifier.*weight' key)")


def load_source_supernet(path: Path, build: Mapping[str, Any]) -> tuple[SuperNet, dict]:
    """Build the configured family (``build``: the keyword arguments of ``build_supernet`` but
    ``n_classes``, which is the checkpoint's) and load ``path`` into it; returns (net, load report).

    Same layout (``SE_B``, or a checkpoint of the configured OFAv2 family): every tensor, checked
    for family, width and lists. An ``SE_B`` (OFA) checkpoint for an OFAv2 family: a warm start.
    """
    payload = read_payload(path)
    net = build_supernet(**build, n_classes=checkpoint_classes(payload))
    is_ours = payload.get("format") == SUPERNET_FORMAT
    source_family = payload.get("config", {}).get("family") if is_ours else "SE_B"  # OFA's layout
    if build["family"] == "SE_B" or source_family != "SE_B":
        load_checkpoint(net, payload)
        return net, {"loaded": "all tensors"}
    return net, warm_start_from_ofa(net, payload)


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
