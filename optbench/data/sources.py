"""Where each dataset's images come from: whole splits as uint8 tensors.

Every dataset is one entry of `DATASETS` and one file in `configs/dataset/`. An entry knows
its shape and sizes without loading anything (`dataset_info`), which is what planning a
schedule needs, and loads its splits into memory (`load_dataset`). The validation split is
`dataset.val_size` training images chosen by `dataset.split_seed`, never trained on: every
decision a run makes (best epoch, targets, plateau, searches) reads it, and the test split
is only reported.
"""

from __future__ import annotations

import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from optbench.checks import is_number, require_int
from optbench.data import schemas, text
from optbench.data.batches import DeviceBatches, Shard
from optbench.data.idx import read_idx
from optbench.data.info import DatasetInfo, ImageSplit
from optbench.errors import UserError


@dataclass(frozen=True)
class ImageDataset:
    info: DatasetInfo
    train: ImageSplit
    val: ImageSplit | None  # None: dataset.val_size is 0
    test: ImageSplit
    mean: tuple[float, ...]  # per channel, on the [0, 1] scale
    std: tuple[float, ...]

    def device_batches(
        self, cfg: DictConfig, *, device: torch.device, batch_size: int, eval_batch_size: int,
        drop_last: bool, seed: int, channels_last: bool, shard: Shard = (0, 1),
    ) -> tuple[DeviceBatches, DeviceBatches | None, DeviceBatches]:  # fmt: skip
        """Training batches (shuffled, augmented as `cfg.augment` says), validation batches
        (None without a validation split) and test batches, of this process's `shard`."""
        common = dict(
            device=device, mean=self.mean, std=self.std, channels_last=channels_last, shard=shard
        )
        train = DeviceBatches(
            self.train, batch_size=batch_size, shuffle=True, drop_last=drop_last,
            crop_padding=cfg.augment.crop_padding, flip=cfg.augment.flip, seed=seed, **common,
        )  # fmt: skip
        val = None
        if self.val is not None:
            val = DeviceBatches(self.val, batch_size=eval_batch_size, **common)
        return train, val, DeviceBatches(self.test, batch_size=eval_batch_size, **common)


@dataclass(frozen=True)
class DatasetSource:
    info: Callable[[DictConfig], DatasetInfo]
    load: Callable[[DictConfig], tuple[ImageSplit, ImageSplit]] | None  # images
    mean: tuple[float, ...] | None = None  # None: computed from the training split
    std: tuple[float, ...] | None = None
    load_text: Callable[[DictConfig, DatasetInfo], text.TextDataset] | None = None
    # The last val_size images `load` returns were drawn for validation (synthetic data);
    # otherwise `dataset.split_seed` chooses which training images are held out.
    draws_val: bool = False
    schema: type = schemas.ImagesConfig  # its config's keys and types


def _cifar10_info(cfg: DictConfig) -> DatasetInfo:
    return DatasetInfo(shape=(3, 32, 32), num_classes=10, train_size=50_000, test_size=10_000)


def _load_cifar10(cfg: DictConfig) -> tuple[ImageSplit, ImageSplit]:
    from torchvision.datasets import CIFAR10

    root = Path(cfg.root).expanduser()
    try:
        splits = [CIFAR10(str(root), train=train, download=cfg.download) for train in (True, False)]
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        reason = str(getattr(err, "reason", err)).splitlines()[0]
        raise UserError(
            f"CIFAR-10 is not in {root} and could not be downloaded ({reason}); "
            "put cifar-10-python.tar.gz there, or use dataset=fashion_mnist "
            "(offline on Debian: apt-get install dataset-fashion-mnist) or dataset=synthetic"
        ) from None

    def to_split(ds: CIFAR10) -> ImageSplit:
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return ImageSplit(images, torch.tensor(ds.targets, dtype=torch.int64))

    return to_split(splits[0]), to_split(splits[1])


_FMNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _find_fashion_mnist(dirs: list[Path]) -> dict[str, Path] | None:
    """The four IDX files from the first folder holding all of them (plain or .gz)."""
    for folder in dirs:
        found = {}
        for key, stem in _FMNIST_FILES.items():
            for candidate in (folder / stem, folder / f"{stem}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(_FMNIST_FILES):
            return found
    return None


def _fashion_mnist_dirs(cfg: DictConfig) -> list[Path]:
    root = Path(cfg.root).expanduser()
    return [
        root / "fashion_mnist",
        root / "FashionMNIST" / "raw",
        *(Path(d) for d in cfg.search_dirs),
    ]


def _not_found(dirs: list[Path]) -> UserError:
    return UserError(
        f"Fashion-MNIST was not found in {', '.join(map(str, dirs))} and download is off; "
        "on Debian: apt-get install dataset-fashion-mnist"
    )


def _fashion_mnist_info(cfg: DictConfig) -> DatasetInfo:
    # Without a download to fall back on, missing files are known before anything starts.
    if not cfg.download and _find_fashion_mnist(_fashion_mnist_dirs(cfg)) is None:
        raise _not_found(_fashion_mnist_dirs(cfg))
    return DatasetInfo(shape=(1, 28, 28), num_classes=10, train_size=60_000, test_size=10_000)


def _load_fashion_mnist(cfg: DictConfig) -> tuple[ImageSplit, ImageSplit]:
    root = Path(cfg.root).expanduser()
    dirs = _fashion_mnist_dirs(cfg)
    torchvision_raw = dirs[1]
    files = _find_fashion_mnist(dirs)
    if files is None and cfg.download:
        from torchvision.datasets import FashionMNIST

        try:
            FashionMNIST(str(root), train=True, download=True)
        except (urllib.error.URLError, OSError, RuntimeError) as err:
            reason = str(getattr(err, "reason", err)).splitlines()[0]
            raise UserError(
                f"Fashion-MNIST was not found in {', '.join(map(str, dirs))} and could not be "
                f"downloaded ({reason}); on Debian: apt-get install dataset-fashion-mnist, "
                "or use dataset=synthetic"
            ) from None
        files = _find_fashion_mnist([torchvision_raw])
    if files is None:
        raise _not_found(dirs)

    def split(images: str, labels: str) -> ImageSplit:
        return ImageSplit(read_idx(files[images]).unsqueeze(1), read_idx(files[labels]).long())

    return split("train_images", "train_labels"), split("test_images", "test_labels")


def _synthetic_info(cfg: DictConfig) -> DatasetInfo:
    shape = tuple(cfg.shape)
    if len(shape) != 3 or min(shape) < 1:
        raise UserError(f"dataset.shape must be [channels, height, width], got {list(shape)}")
    if cfg.num_classes < 2:
        raise UserError(f"dataset.num_classes must be at least 2, got {cfg.num_classes}")
    if cfg.train_size < 1 or cfg.test_size < 1:
        raise UserError("dataset.train_size and dataset.test_size must be at least 1")
    for key in ("separation", "noise"):
        if not (is_number(cfg[key]) and cfg[key] >= 0):
            raise UserError(f"dataset.{key} must be a number >= 0, got {cfg[key]!r}")
    # The pool the validation split is held out from: train_size images are left to train on.
    val_size = require_int(cfg.val_size, "dataset.val_size", 0)
    return DatasetInfo(shape, cfg.num_classes, cfg.train_size + val_size, cfg.test_size)


def _load_synthetic(cfg: DictConfig) -> tuple[ImageSplit, ImageSplit]:
    """Images sharing one smooth random base pattern, each class adding its own faint pattern.

    Noise (`noise`) and a random contrast per sample blur the classes' difference
    (`separation`), so accuracy climbs over several epochs instead of jumping to 100%:
    at the defaults an MLP reaches about 70% after one epoch and 85% after five.
    Deterministic by `seed`.
    """
    info = _synthetic_info(cfg)
    channels, height, width = info.shape
    g = torch.Generator().manual_seed(cfg.seed)

    def smooth(n: int) -> torch.Tensor:
        coarse = torch.rand(n, channels, 4, 4, generator=g)
        return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)

    base, class_patterns = smooth(1), smooth(info.num_classes) - 0.5

    def split(n: int) -> ImageSplit:
        labels = torch.randint(info.num_classes, (n,), generator=g)
        contrast = 0.75 + 0.5 * torch.rand(n, 1, 1, 1, generator=g)
        noise = torch.randn(n, channels, height, width, generator=g) * cfg.noise
        images = base + cfg.separation * contrast * class_patterns[labels] + noise
        return ImageSplit(images.clamp(0, 1).mul(255).round().to(torch.uint8), labels)

    # The validation images are drawn last: training and test images do not depend on val_size.
    train, test = split(cfg.train_size), split(info.test_size)
    val = split(cfg.val_size)
    pool = ImageSplit(torch.cat([train.images, val.images]), torch.cat([train.labels, val.labels]))
    return pool, test


DATASETS: dict[str, DatasetSource] = {
    "cifar10": DatasetSource(
        _cifar10_info,
        _load_cifar10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        schema=schemas.Cifar10Config,
    ),
    "fashion_mnist": DatasetSource(
        _fashion_mnist_info,
        _load_fashion_mnist,
        mean=(0.2860,),
        std=(0.3530,),
        schema=schemas.FashionMnistConfig,
    ),
    "synthetic": DatasetSource(
        _synthetic_info, _load_synthetic, draws_val=True, schema=schemas.SyntheticConfig
    ),
    **{
        name: DatasetSource(text.text_info, None, load_text=text.load_text, schema=schema)
        for name, schema in text.SCHEMAS.items()
    },
}


def _source(cfg: DictConfig) -> DatasetSource:
    if cfg.name not in DATASETS:
        raise UserError(f"unknown dataset '{cfg.name}'; choose from {', '.join(DATASETS)}")
    return DATASETS[cfg.name]


def dataset_info(cfg: DictConfig) -> DatasetInfo:
    """Shape and sizes of the dataset `cfg` selects (after the validation split and
    `train_subset`), without loading it."""
    source = _source(cfg)
    info = source.info(cfg)
    if source.load_text is None:  # text holds out a fraction of its own (optbench/data/text.py)
        info = _without_val(info, cfg)
        if not source.draws_val:
            require_int(cfg.split_seed, "dataset.split_seed", 0)
    if "augment" in cfg:
        require_int(cfg.augment.crop_padding, "dataset.augment.crop_padding", 0)
    flip = OmegaConf.select(cfg, "augment.flip", default=False)
    if flip not in (True, False, "alternate"):
        raise UserError(f"dataset.augment.flip must be true, false or alternate, got {flip!r}")
    subset = cfg.get("train_subset")
    if subset is not None:
        if subset < 1:
            raise UserError(f"dataset.train_subset must be at least 1, got {subset}")
        info = replace(info, train_size=min(subset, info.train_size))
    return info


def _without_val(pool: DatasetInfo, cfg: DictConfig) -> DatasetInfo:
    """The sizes once `dataset.val_size` images are held out of the training images."""
    val_size = require_int(cfg.val_size, "dataset.val_size", 0)
    if val_size >= pool.train_size:
        raise UserError(
            f"dataset.val_size={val_size} leaves no training images: {cfg.name} has "
            f"{pool.train_size:,} (hold out fewer, e.g. dataset.val_size={pool.train_size // 10})"
        )
    return replace(pool, train_size=pool.train_size - val_size, val_size=val_size)


def hold_out(
    pool: ImageSplit, val_size: int, seed: int | None
) -> tuple[ImageSplit, ImageSplit | None]:
    """`val_size` images of `pool` chosen at random by `seed` (None: the last ones), and the
    rest in their order."""
    if not val_size:
        return pool, None
    if seed is None:
        chosen = torch.arange(len(pool)).roll(val_size)
    else:
        chosen = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))
    val_index, train_index = chosen[:val_size], chosen[val_size:].sort().values
    return (
        ImageSplit(pool.images[train_index], pool.labels[train_index]),
        ImageSplit(pool.images[val_index], pool.labels[val_index]),
    )


def load_dataset(cfg: DictConfig) -> ImageDataset | text.TextDataset:
    """Both splits of the dataset `cfg` selects, in memory (images with their normalisation
    constants, text as tokens)."""
    source = _source(cfg)
    info = dataset_info(cfg)
    if source.load_text is not None:
        return source.load_text(cfg, info)
    pool, test = source.load(cfg)
    seed = None if source.draws_val else require_int(cfg.split_seed, "dataset.split_seed", 0)
    train, val = hold_out(pool, info.val_size, seed)
    if len(train) > info.train_size:
        train = ImageSplit(train.images[: info.train_size], train.labels[: info.train_size])
    if source.mean is not None:
        mean, std = source.mean, source.std
    else:
        pixels = train.images.float().div(255).transpose(0, 1).reshape(info.shape[0], -1)
        mean = tuple(pixels.mean(dim=1).tolist())
        std = tuple(pixels.std(dim=1).clamp_min(1e-3).tolist())
    return ImageDataset(info, train, val, test, mean, std)
