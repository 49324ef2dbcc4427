"""Released super-network checkpoints that ``supernet.source: {pretrained: NAME}`` can fetch.

OFA's MobileNetV3 super-networks (Cai et al.), from the URLs the reference ``ofa`` package uses.
Their sha256 is not pinned here: this project's machines cannot reach the host to compute it, and
we do not type hashes we have not measured. The hash of what was downloaded is always recorded in
``supernet.json``; pin it with ``{url: ..., sha256: ...}`` to make later downloads verified.
"""

from __future__ import annotations

from dataclasses import dataclass

from natv2.errors import UserError

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
