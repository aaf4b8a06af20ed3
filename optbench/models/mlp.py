"""A multilayer perceptron on flattened images: the simplest model an optimizer can train."""

from __future__ import annotations

from torch import nn


class MLP(nn.Sequential):
    def __init__(self, in_features: int, num_classes: int, hidden: tuple[int, ...] = (512, 256)):
        layers: list[nn.Module] = [nn.Flatten()]
        previous = in_features
        for width in hidden:
            layers += [nn.Linear(previous, width), nn.ReLU()]
            previous = width
        layers.append(nn.Linear(previous, num_classes))
        super().__init__(*layers)
