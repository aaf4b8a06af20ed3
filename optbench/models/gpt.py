"""A small GPT (nanoGPT's shape): token and position embeddings, causal pre-norm blocks, a
final norm and a language-model head, tied to the token embedding or not.

Weight decay follows nanoGPT: every matrix decays, embeddings included; biases and norms do not.
"""

from __future__ import annotations

import torch
from torch import nn

from optbench.models.transformer import Block, block_layer_id


class GPT(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        *,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        tied: bool = True,
    ):
        super().__init__()
        self.depth = depth
        self.wte = nn.Embedding(vocab_size, dim)
        self.wpe = nn.Embedding(block_size, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, causal=True) for _ in range(depth))
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        if tied:
            self.lm_head.weight = self.wte.weight
        for module in self.modules():  # GPT-2's initialisation
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    @property
    def num_layers(self) -> int:
        return self.depth + 2

    def layer_id(self, name: str) -> int:
        return block_layer_id(name, self.depth)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.wte(tokens) + self.wpe(positions)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))
