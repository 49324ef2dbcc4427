"""Super-networks (OFA MobileNetV3 and the OFAv2 families), extraction, checkpoints.

```python
from natv2.supernet import build_supernet, load_checkpoint
net = build_supernet("SE_B", width_mult=1.0, n_classes=1000)
load_checkpoint(net, "ofa_mbv3_d234_e346_k357_w1.0")   # OFA's layouts or ours
logits = net(x, arch)          # arch: natv2.space.Arch or {"ks": [20], "e": [20], "d": [5]}
sub = net.extract(arch)        # static nn.Module, same eval-mode outputs

net = build_supernet("EE_DP", width_mult=1.0, n_classes=10)   # any of the 8 OFAv2 families
warm_start_from_ofa(net, ofa_checkpoint_path)   # OFA weights for every shared tensor
outs = net(x, arch, all_exits=True)           # logits of exits 1..nd (arch.nd, arch.nw used)
multi = net.extract(arch, all_exits=True)     # static multi-exit net; multi.ensemble(x)
```

Layers: ``common`` (rounding, activations) -> ``layers`` (plain modules) -> ``static`` (the one
static-structure builder ``static_pieces``, ``StaticNet``, ``build_static``) ->
``elastic`` (sliced ops) -> ``blocks`` -> ``exits`` (OFAv2 exit widths/weights) -> ``ofa_mbv3``
(the super-network, all families) -> ``families`` (``build_supernet``), ``checkpoint`` and
``warm_start`` (OFA weights into any family) -> ``sources`` (``supernet.source``: the kinds, the
registry of released checkpoints, ``download``, the safe read, the head decision; not imported
here).
"""

from .checkpoint import (
    LEGACY_RENAMES,
    load_checkpoint,
    load_static,
    load_supernet,
    map_state_dict,
    read_extra,
    save_checkpoint,
)
from .common import make_divisible
from .exits import OFAV2_EXIT_WEIGHTS
from .families import (
    FAMILIES,
    IMPLEMENTED_FAMILIES,
    WIDTH_MULTS,
    build_supernet,
    check_family,
    describe_family,
)
from .ofa_mbv3 import SuperNet
from .static import StaticNet, build_static
from .warm_start import warm_start_from_ofa
from .widths import WidthSuperNets

__all__ = [
    "FAMILIES",
    "IMPLEMENTED_FAMILIES",
    "LEGACY_RENAMES",
    "OFAV2_EXIT_WEIGHTS",
    "WIDTH_MULTS",
    "StaticNet",
    "SuperNet",
    "WidthSuperNets",
    "build_static",
    "build_supernet",
    "check_family",
    "describe_family",
    "load_checkpoint",
    "load_static",
    "load_supernet",
    "make_divisible",
    "map_state_dict",
    "read_extra",
    "save_checkpoint",
    "warm_start_from_ofa",
]
