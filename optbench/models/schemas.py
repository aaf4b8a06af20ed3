"""The keys of each model's config (`configs/model/`) and their types: its schema
(optbench/run/schema.py). The YAMLs document the defaults; tests/test_schema.py keeps both in
step."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ResNet18Config:
    name: str = "resnet18"
    width: int = 64


@dataclass
class FastCNNConfig:
    name: str = "fastcnn"
    widths: list[int] = field(default_factory=lambda: [64, 256, 256])


@dataclass
class Airbench94Config(FastCNNConfig):
    name: str = "airbench94"
    whiten_bias_epochs: int | None = 3
    logit_divisor: float = 9.0
    head_std: float | None = None


@dataclass
class ViTConfig:
    name: str = "vit"
    patch_size: int = 4
    dim: int = 256
    depth: int = 6
    heads: int = 8
    mlp_ratio: float = 2.0
    pool: str = "cls"


@dataclass
class GPTConfig:
    name: str = "gpt"
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    tied: bool = True


@dataclass
class MLPConfig:
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [512, 256])
