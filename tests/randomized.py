"""Random weights and BN statistics for output-equality tests of super-networks (ours and OFA's
reference): activations stay O(1), the kernel-transform matrices are not identities, and
squeeze-excite, classifier and transform-branch biases matter."""

from __future__ import annotations

import torch
from torch import nn


def randomize(net: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("_matrix"):
                p.add_(0.2 * torch.randn(p.shape, generator=g))
            elif ".se.fc." in name or "classifier" in name:
                p.normal_(0.0, 0.5, generator=g)
            elif name.endswith("transform.conv.bias"):
                p.normal_(0.0, 0.1, generator=g)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.1, generator=g)
    return net

