"""What a dataset is, before and after loading: its shape and sizes, and an image split."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DatasetInfo:
    """What planning a run needs to know about a dataset without loading it."""

    shape: tuple[int, ...]  # one sample: (C, H, W) for images, (block_size,) for text
    num_classes: int  # classes, or the vocabulary of a language model
    train_size: int  # samples per epoch: images, or text windows (the validation split excluded)
    test_size: int
    val_size: int = 0  # held out from the training data; 0: no validation split


@dataclass(frozen=True)
class ImageSplit:
    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return len(self.labels)
