"""airbench94's network with its initialisation tricks (Keller Jordan, cifar10-airbench).

On top of the `fastcnn` shape: a frozen 2x2 patch-whitening first layer whose filters are the
eigenvectors of the training set's 2x2 patch covariance, scaled by 1/sqrt(eigenvalue + eps),
and their negatives (`initialize`, called by the build with training images); batch norms
with frozen scales and momentum 0.6; identity (Dirac) initialisation of each convolution's
first in-channels filters; a linear head whose logits are divided by 9 (airbench94_muon: by the
width, with unit-std weights); the whitening layer's bias starts at
zero and trains for the first `whiten_bias_epochs` epochs only (`set_epoch`). Its training
recipe (label smoothing, flips, TTA, schedule) lives in the config, as ordinary switches.
"""

from __future__ import annotations

import torch
from torch import nn

from optbench.models.fastcnn import FastCNN

WHITENING_EPS = 5e-4


def patches(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Every size[0] x size[1] patch of `images` (N, C, H, W), as (patches, C, h, w)."""
    h, w = size
    c = images.shape[1]
    return images.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c, h, w).float()


def whitening_filters(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The eigenvectors of the patch covariance over sqrt(eigenvalue + eps), largest first."""
    flat = patches(images, size).flatten(1)
    covariance = flat.T @ flat / len(flat)
    values, vectors = torch.linalg.eigh(covariance)
    c, (h, w) = images.shape[1], size
    filters = vectors.T.reshape(-1, c, h, w).flip(0)
    return filters / torch.sqrt(values.flip(0) + WHITENING_EPS).view(-1, 1, 1, 1)


class Airbench94(FastCNN):
    def __init__(
        self, in_channels: int, num_classes: int, widths: tuple[int, int, int],
        whiten_bias_epochs: int | None = None, logit_divisor: float = 9,
        head_std: float | None = None,
    ):  # fmt: skip
        patch = 2
        super().__init__(
            in_channels, num_classes, widths, stem_width=2 * in_channels * patch**2,
            logit_scale=1 / logit_divisor,
        )  # fmt: skip
        if head_std is not None:  # airbench94_muon: unit-std head weights, logits / width
            with torch.no_grad():
                head = self.head[-1].weight
                head.mul_(head_std / head.std())
        self.whiten = self.stem[0]
        self.whiten.weight.requires_grad_(False)  # frozen: set once from the data
        nn.init.zeros_(self.whiten.bias)
        self.whiten_bias_epochs = whiten_bias_epochs  # None: the bias trains throughout
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                # airbench's momentum 0.6 weighs the old running statistics; torch's, the batch's.
                module.momentum = 1 - 0.6
                module.weight.requires_grad_(False)  # frozen scales of 1
            elif isinstance(module, nn.Conv2d) and module is not self.whiten:
                with torch.no_grad():
                    nn.init.dirac_(module.weight[: module.in_channels])

    def set_epoch(self, epoch: int) -> None:
        """Freeze the whitening bias once `whiten_bias_epochs` epochs (from 0) have passed."""
        if self.whiten_bias_epochs is not None:
            self.whiten.bias.requires_grad_(epoch < self.whiten_bias_epochs)

    @torch.no_grad()
    def initialize(self, images: torch.Tensor) -> None:
        """Set the whitening filters (and their negatives) from normalised training images."""
        filters = whitening_filters(images, tuple(self.whiten.weight.shape[2:]))
        self.whiten.weight.copy_(torch.cat([filters, -filters]))
