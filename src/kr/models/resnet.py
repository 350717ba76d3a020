"""Small-image ResNets (He et al. 2016, §4.2: the 6n+2 CIFAR family).

Three stages of n basic blocks at widths w, 2w, 4w, the last two halving resolution, then
global average pooling, so one network handles 28 px and 64 px inputs and any channel count.
GroupNorm is offered because DP-SGD (Opacus) cannot use BatchNorm's cross-sample statistics.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(min(8, channels), channels)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = _norm(norm, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = _norm(norm, c_out)
        self.shortcut, self.stride = nn.Sequential(), stride
        if stride != 1 or c_in != c_out:  # projection shortcut (option B) keeps the code simple
            # Subsample, then a stride-1 1×1 conv: the same function as a strided 1×1 conv, but
            # oneDNN's strided 1×1 weight gradient on channels-last inputs with fewer channels
            # than its vector block (16 with AVX-512) writes past its buffer: a crash or wrong
            # gradients (oneDNN issue 6035; seen here in DP-SGD at width 8, odd batches).
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, 1, bias=False),
                                          _norm(norm, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.stride == 1 else x[:, :, ::self.stride, ::self.stride]
        return F.relu(out + self.shortcut(skip))


class ResNet(nn.Module):
    def __init__(self, depth: int, in_channels: int, num_classes: int, width: int = 16,
                 norm: str = "batch", dropout: float = 0.0):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"ResNet depth must be 6n+2 (8, 14, 20, 32, …), got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                                  _norm(norm, width), nn.ReLU())
        layers, c = [], width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                layers.append(BasicBlock(c, c_out, 2 if (stage > 0 and i == 0) else 1, norm))
                c = c_out
        self.blocks = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c, num_classes)
        self.feature_dim = c
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (after global pooling): the space for Fréchet distances later."""
        return torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x)))
