"""The keys of each dataset's config (`configs/dataset/`) and their types: its schema
(optbench/run/schema.py). The YAMLs document the defaults; tests/test_schema.py keeps both in
step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class AugmentConfig:
    crop_padding: int = 0
    flip: Any = False  # true | false | alternate


@dataclass
class ImagesConfig:
    name: str = "cifar10"
    task: str = "classification"
    root: str = "data"
    download: bool = True
    val_size: int = 5000
    split_seed: int = 0
    train_subset: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class Cifar10Config(ImagesConfig):
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(crop_padding=4, flip=True))


@dataclass
class FashionMnistConfig(ImagesConfig):
    name: str = "fashion_mnist"
    search_dirs: list[str] = field(default_factory=lambda: ["/usr/share/datasets/fashion-mnist"])


@dataclass
class SyntheticConfig:
    name: str = "synthetic"
    task: str = "classification"
    shape: list[int] = field(default_factory=lambda: [3, 32, 32])
    num_classes: int = 10
    train_size: int = 2048
    val_size: int = 512
    test_size: int = 512
    separation: float = 0.2
    noise: float = 0.5
    seed: int = 0
    train_subset: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class TextConfig:
    """What every text source takes; each adds where its text comes from."""

    name: str = "text"
    task: str = "language_model"
    block_size: int = 128
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    windows_per_epoch: int | None = None


@dataclass
class TextFileConfig(TextConfig):
    path: str | None = None


@dataclass
class TinyShakespeareConfig(TextConfig):
    name: str = "tiny_shakespeare"
    root: str = "data"
    download: bool = True


@dataclass
class FortunesConfig(TextConfig):
    name: str = "fortunes"
    folder: str = "/usr/share/games/fortunes"


@dataclass
class MarkovConfig(TextConfig):
    name: str = "markov"
    vocab_size: int = 16
    concentration: float = 0.3
    length: int = 200000
    seed: int = 0
    block_size: int = 32
