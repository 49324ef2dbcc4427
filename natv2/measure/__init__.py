"""Measurements of a sub-network: parameters, MACs, latency, BN recalibration, top-1.

```python
from natv2.measure import count_params, count_macs, Evaluator
count_params(sub); count_macs(sub, resolution=224)     # exact ints
evaluate = Evaluator(supernet, splits, "auto", [24, 28, 32], encoder=space)
record = evaluate(arch)    # {"arch", "top1", "params", "macs", "latency_ms", "r", "w", "d", "nd"}
```
"""

from .accuracy import logits_of, top1
from .bn import recalibrate_bn
from .counting import count_macs, count_params
from .device import resolve_device
from .evaluate import RECORD_KEYS, Evaluator
from .latency import latency_ms

__all__ = [
    "RECORD_KEYS",
    "Evaluator",
    "count_macs",
    "count_params",
    "latency_ms",
    "logits_of",
    "recalibrate_bn",
    "resolve_device",
    "top1",
]
