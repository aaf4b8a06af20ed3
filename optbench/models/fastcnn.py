"""A small fast CNN in the style of airbench94's 8-layer net (Keller Jordan, 2024).

Same shape as airbench94: a 2x2 stem convolution, three groups of
(conv, max-pool, batch-norm, GELU, conv, batch-norm, GELU) of widths 64/256/256, a global
max-pool and a linear head whose logits are scaled by 1/9. Left out: airbench's whitening
initialisation of the stem, its frozen batch-norm scales and its lookahead/TTA tricks, so
this is the architecture, not the 94%-in-3-seconds recipe.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvGroup(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding="same", bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding="same", bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class FastCNN(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: tuple[int, int, int] = (64, 256, 256),
        stem_width: int = 24,
        logit_scale: float = 1 / 9,
    ):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem_width, 2), nn.GELU())
        self.group1 = ConvGroup(stem_width, widths[0])
        self.group2 = ConvGroup(widths[0], widths[1])
        self.group3 = ConvGroup(widths[1], widths[2])
        self.head = nn.Sequential(
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(widths[2], num_classes, bias=False)
        )
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.group3(self.group2(self.group1(self.stem(x))))
        return self.head(x) * self.logit_scale
