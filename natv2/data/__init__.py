"""Datasets and deterministic splits: digits (bundled with scikit-learn), CIFAR-10/100, ImageFolder.

```python
from natv2.data import build_splits, calibration_batches
splits = build_splits(cfg, resolution=32)          # .train (augmented) / .val / .test / .trainval
batches = calibration_batches(splits, cfg, 32)     # fixed BN-recalibration images
```
"""

from .datasets import FileImageDataset, TensorImageDataset, TransformView
from .sources import DATASET_NAMES, DataError, stratified_split
from .splits import (
    DATA_DEFAULTS,
    Splits,
    build_splits,
    calibration_batches,
    data_settings,
    make_loader,
    materialize,
)

__all__ = [
    "DATASET_NAMES",
    "DATA_DEFAULTS",
    "DataError",
    "FileImageDataset",
    "Splits",
    "TensorImageDataset",
    "TransformView",
    "build_splits",
    "calibration_batches",
    "data_settings",
    "make_loader",
    "materialize",
    "stratified_split",
]
