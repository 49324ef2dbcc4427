"""Image transforms for the natural-image datasets (CIFAR-10/100, ImageFolder).

Digits does not use these: it is kept as in-memory tensors (see ``natv2.data.sources``).
"""

from __future__ import annotations

from torchvision import transforms as T

# Standard ImageNet statistics, used by OFA/NAT for every natural-image dataset (the super-network
# was pre-trained with them, so transfer keeps them).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_transform(resolution: int, mean, std) -> T.Compose:
    """Resize the short side to ``resolution`` and centre-crop a square (a plain square resize
    for square images such as CIFAR or Tiny ImageNet).

    Departure from OFA: OFA's ImageNet eval resizes to ``resolution / 0.875`` before the centre
    crop; for CIFAR (32 px) and Tiny ImageNet (64 px) the object fills the frame, so NAT-style
    transfer resizes the whole image instead.
    """
    return T.Compose(
        [
            T.Resize(resolution, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(resolution),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def cifar_train_transform(resolution: int, mean, std) -> T.Compose:
    """CIFAR augmentation: resize to ``resolution``, pad by ``resolution // 8`` (4 px at 32 px,
    the classic CIFAR recipe) and random-crop back, random horizontal flip.

    Departure from OFA's RandomResizedCrop(scale=(0.08, 1)): on 32 px images that crop is very
    aggressive; pad + crop scaled with the resolution is the standard CIFAR augmentation.
    """
    return T.Compose(
        [
            T.Resize(resolution, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(resolution),
            T.RandomCrop(resolution, padding=max(1, resolution // 8)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def imagefolder_train_transform(resolution: int, mean, std) -> T.Compose:
    """ImageNet-style augmentation as in OFA: RandomResizedCrop(scale=(0.08, 1)) + flip."""
    return T.Compose(
        [
            T.RandomResizedCrop(
                resolution,
                scale=(0.08, 1.0),
                interpolation=T.InterpolationMode.BILINEAR,
                antialias=True,
            ),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
