"""A Vision Transformer (Dosovitskiy et al. 2021) sized for small images: patch embedding,
class token or average pooling, learned position embeddings, pre-norm blocks."""

from __future__ import annotations

import torch
from torch import nn

from optbench.models.transformer import Block, block_layer_id


class ViT(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        *,
        patch_size: int = 4,
        dim: int = 256,
        depth: int = 6,
        heads: int = 8,
        mlp_ratio: float = 2.0,
        pool: str = "cls",
    ):
        super().__init__()
        if any(side % patch_size for side in image_size):
            raise ValueError(f"image size {image_size} is not divisible by patch size {patch_size}")
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be cls or mean, got '{pool}'")
        tokens = (image_size[0] // patch_size) * (image_size[1] // patch_size)
        self.pool, self.depth = pool, depth
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + (pool == "cls"), dim) * 0.02)
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio, causal=False) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    @property
    def num_layers(self) -> int:
        return self.depth + 2

    def layer_id(self, name: str) -> int:
        return block_layer_id(name, self.depth)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return self.head(x[:, 0] if self.cls_token is not None else x.mean(dim=1))
