"""Batches from a split held whole on the training device, augmented there.

No DataLoader and no worker processes: the uint8 images live on the device, and each batch
is gathered, randomly cropped and flipped per sample, and normalised with a few tensor ops.
An epoch's order, crops and flips are a pure function of (seed, epoch), so a run resumed in
the middle of an epoch sees exactly the batches an uninterrupted run would have seen. Split
over several processes, each takes its own slice of every such batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from optbench.data.info import ImageSplit

Batch = tuple[torch.Tensor, torch.Tensor]
Shard = tuple[int, int]  # (rank, processes): which slice of every batch this process takes


def shard_slice(start: int, end: int, shard: Shard) -> slice:
    """Rank's contiguous slice of the batch at positions [start, end): sizes differ by at
    most one, and the slices of all ranks tile the batch in order."""
    rank, ranks = shard
    size, extra = divmod(end - start, ranks)
    first = start + rank * size + min(rank, extra)
    return slice(first, first + size + (rank < extra))


class DeviceBatches:
    """Iterate one split in batches of normalised float images and int64 labels."""

    def __init__(
        self,
        split: ImageSplit,
        *,
        batch_size: int,
        device: torch.device,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        shuffle: bool = False,
        drop_last: bool = False,
        crop_padding: int = 0,
        flip: bool = False,
        seed: int = 0,
        channels_last: bool = False,
        shard: Shard = (0, 1),
    ):
        self.batch_size = batch_size
        self.shard = shard
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.crop_padding = crop_padding
        self.flip = flip
        self.seed = seed
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        images = split.images.to(device)
        if crop_padding:
            # Pad once; a random crop is then a window of the padded image.
            images = F.pad(images, [crop_padding] * 4)
        self.images = images
        self.labels = split.labels.to(device)
        height, width = split.images.shape[-2:]
        channels = split.images.shape[1]
        # Index grids of a crop, made once: a batch's crop only adds its offsets to them.
        self.sample_index = torch.arange(batch_size, device=device)[:, None, None, None]
        self.channel_index = torch.arange(channels, device=device)[None, :, None, None]
        self.row_index = torch.arange(height, device=device)
        self.col_index = torch.arange(width, device=device)
        # Normalise straight from the uint8 scale: (x - 255 mean) / (255 std).
        self.mean = torch.tensor(mean, device=device).mul(255).view(1, channels, 1, 1)
        self.std = torch.tensor(std, device=device).mul(255).view(1, channels, 1, 1)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def first_images(self, n: int) -> torch.Tensor:
        """The split's first `n` images, normalised, without augmentation."""
        images = self.images[:n]
        if self.crop_padding:
            p = self.crop_padding
            images = images[..., p:-p, p:-p]
        return (images.float() - self.mean) / self.std

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """The batches of `epoch`, beginning at batch index `start_batch`."""
        n = len(self.labels)
        device = self.images.device
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        span = 2 * self.crop_padding + 1
        shifts = torch.randint(span, (n, 2), generator=g) if self.crop_padding else None
        flips = torch.rand(n, generator=g) < 0.5 if self.flip is True else None
        if self.flip == "alternate":
            # airbench's alternating flip: each image's own coin, inverted every other epoch.
            coins = torch.rand(n, generator=torch.Generator().manual_seed(self.seed)) < 0.5
            flips = (coins ^ bool(epoch % 2))[order]
        order = order.to(device, non_blocking=True)
        shifts = shifts.to(device, non_blocking=True) if shifts is not None else None
        flips = flips.to(device, non_blocking=True) if flips is not None else None
        for b in range(start_batch, len(self)):
            positions = shard_slice(
                b * self.batch_size, min((b + 1) * self.batch_size, n), self.shard
            )
            index = order[positions]
            images = self.images[index]
            if shifts is not None:
                images = self._crop(images, shifts[positions])
            if flips is not None:
                images = torch.where(flips[positions].view(-1, 1, 1, 1), images.flip(-1), images)
            images = (images.float() - self.mean) / self.std
            yield images.contiguous(memory_format=self.memory_format), self.labels[index]

    def _crop(self, padded: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        """Cut each padded image's window at its own (dy, dx) offset in one gather."""
        rows = shifts[:, 0, None] + self.row_index  # (B, H)
        cols = shifts[:, 1, None] + self.col_index  # (B, W)
        return padded[
            self.sample_index[: len(shifts)],
            self.channel_index,
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]
