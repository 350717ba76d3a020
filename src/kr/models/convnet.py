"""A plain VGG-style CNN (Simonyan & Zisserman 2015, scaled to 28–64 px): the second
architecture of the registry, used where a classifier must not share the teacher's design —
the independent judge of generated images (kr.quality).

Three stages at widths w, 2w, 4w, each two 3×3 conv–norm–ReLU layers, max pooling between
stages, then global average pooling: no residual connections, other receptive fields and
other features than the ResNets the teacher and the students use.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from kr.models.resnet import _norm


def _layer(c_in: int, c_out: int, norm: str) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), _norm(norm, c_out), nn.ReLU()]


class ConvNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int = 16, norm: str = "batch",
                 dropout: float = 0.0):
        super().__init__()
        w = width
        self.stem = nn.Sequential(*_layer(in_channels, w, norm))
        self.blocks = nn.Sequential(*_layer(w, w, norm), nn.MaxPool2d(2),
                                    *_layer(w, 2 * w, norm), *_layer(2 * w, 2 * w, norm), nn.MaxPool2d(2),
                                    *_layer(2 * w, 4 * w, norm), *_layer(4 * w, 4 * w, norm))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(4 * w, num_classes)
        self.feature_dim = 4 * w

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (after global pooling), as ResNet.features."""
        return torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x)))
