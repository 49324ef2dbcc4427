"""Image transforms for the natural-image datasets (CIFAR-10/100, ImageFolder), as the thesis'
data providers build them (``NAT_extended/data_providers/*.py``, ``build_train_transform`` /
``build_valid_transform``; ``OFA_mbv3_extended/data_providers/tiny_imagenet.py``).

Digits does not use these: it is kept as in-memory tensors (see ``natv2.data.sources``).
"""

from __future__ import annotations

import math

from torchvision import transforms as T

#: ImageNet statistics: OFA's, and the default of an ImageFolder dataset (``data.mean/std``)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the thesis' CIFAR statistics (``NAT_extended/data_providers/cifar.py`` ``normalize``: the
#: CIFAR-10 values, for CIFAR-100 too)
CIFAR_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR_STD = (0.24703233, 0.24348505, 0.26158768)


def eval_transform(resolution: int, mean, std, crop: float) -> T.Compose:
    """ImageFolder evaluation: resize the short side to ``ceil(resolution / crop)`` (bilinear),
    centre-crop ``resolution`` (``crop = 1``: the whole image, resized; ``data.eval_crop``, whose
    0.875 default is the thesis' ImageNet, Tiny ImageNet, STL-10, Pets and Aircraft one)."""
    return T.Compose(
        [
            T.Resize(int(math.ceil(resolution / crop)),
                     interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(resolution),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def cifar_eval_transform(resolution: int, mean, std) -> T.Compose:
    """CIFAR evaluation as the thesis: ``Resize(resolution, BICUBIC)`` of the whole image."""
    return T.Compose(
        [
            T.Resize(resolution, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def cifar_train_transform(resolution: int, mean, std) -> T.Compose:
    """CIFAR augmentation as the thesis: ``RandomResizedCrop(resolution, scale=(1, 1),
    ratio=(1, 1))`` (the whole image, resized), horizontal flip, AutoAugment with the CIFAR-10
    policy (the thesis' ``auto_augment.py``, LaNAS' copy of the 25 sub-policies of Cubuk et al.;
    torchvision's ``AutoAugment(CIFAR10)`` holds the same operations, probabilities and levels,
    drawing from torch's RNG). The levels' magnitudes differ: LaNAS draws uniformly within one
    of 11 bins of a signed range (e.g. shear ``linspace(-0.3, 0.3, 11)``, solarize thresholds
    ``linspace(0, 256, 11)``, posterize ``linspace(4, 8, 11)`` bits), torchvision takes 10
    unsigned steps with a random sign (solarize ``linspace(255, 0, 10)``, posterize ``8 -
    round(level / 2.25)``): a declared departure (``docs/DESIGN-NOTES.md``)."""
    return T.Compose(
        [
            T.RandomResizedCrop(resolution, scale=(1.0, 1.0), ratio=(1.0, 1.0),
                                interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.RandomHorizontalFlip(),
            T.AutoAugment(T.AutoAugmentPolicy.CIFAR10),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def imagefolder_train_transform(resolution: int, mean, std, scale: float) -> T.Compose:
    """ImageNet-style augmentation as OFA and the thesis: ``RandomResizedCrop(resolution,
    scale=(scale, 1))`` + horizontal flip (the thesis' Tiny ImageNet: ``scale`` 0.85)."""
    return T.Compose(
        [
            T.RandomResizedCrop(
                resolution,
                scale=(scale, 1.0),
                interpolation=T.InterpolationMode.BILINEAR,
                antialias=True,
            ),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
