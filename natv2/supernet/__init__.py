"""Super-networks (OFA MobileNetV3 and, later, the OFAv2 families), extraction, checkpoints.

```python
from natv2.supernet import build_supernet, load_checkpoint
net = build_supernet("SE_B", width_mult=1.0, n_classes=1000)
load_checkpoint(net, "ofa_mbv3_d234_e346_k357_w1.0")   # OFA's layouts or ours
logits = net(x, arch)          # arch: natv2.space.Arch or {"ks": [20], "e": [20], "d": [5]}
sub = net.extract(arch)        # static nn.Module, same eval-mode outputs
```

Layers: ``common`` (rounding, activations) -> ``static`` (plain modules, ``build_static``) ->
``elastic`` (sliced ops) -> ``blocks`` -> ``ofa_mbv3`` (the super-network) -> ``families``
(``build_supernet``) and ``checkpoint``.
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
from .families import FAMILIES, IMPLEMENTED_FAMILIES, WIDTH_MULTS, build_supernet, check_family
from .ofa_mbv3 import SuperNet
from .static import StaticNet, build_static

__all__ = [
    "FAMILIES",
    "IMPLEMENTED_FAMILIES",
    "LEGACY_RENAMES",
    "WIDTH_MULTS",
    "StaticNet",
    "SuperNet",
    "build_static",
    "build_supernet",
    "check_family",
    "load_checkpoint",
    "load_static",
    "load_supernet",
    "make_divisible",
    "map_state_dict",
    "read_extra",
    "save_checkpoint",
]
