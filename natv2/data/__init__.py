"""Datasets and deterministic splits: digits (bundled with scikit-learn), Fashion-MNIST, CIFAR-10/100,
ImageFolder.

```python
from natv2.data import build_splits, calibration_batches
from natv2.data import DataSettings
splits = build_splits(DataSettings.from_config(cfg), resolution=32)  # .train / .val / .test / .trainval
batches = calibration_batches(splits, 32)          # fixed BN-recalibration images
```
"""

from .datasets import FileImageDataset, TensorImageDataset, TransformView
from .sources import DATASET_NAMES, GRAYSCALE_DATASETS, DataError, stratified_split
from .splits import (
    DataSettings,
    Splits,
    build_splits,
    calibration_batches,
    make_loader,
    materialize,
)

__all__ = [
    "DATASET_NAMES",
    "GRAYSCALE_DATASETS",
    "DataError",
    "DataSettings",
    "FileImageDataset",
    "Splits",
    "TensorImageDataset",
    "TransformView",
    "build_splits",
    "calibration_batches",
    "make_loader",
    "materialize",
    "stratified_split",
]
