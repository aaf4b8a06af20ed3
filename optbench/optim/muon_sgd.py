"""airbench94_muon's optimizer: Muon for conv filters and hidden matrices, Nesterov SGD for the rest.

Keller Jordan's CIFAR-10 record (cifar10-airbench, airbench94_muon.py: 94.01% in 2.59 s on an
A100, as reported there) trains every conv filter with a Muon that first rescales the filter
bank to norm sqrt(out_channels) and then steps along 3 bfloat16 Newton-Schulz iterations of its
Nesterov momentum; biases, norms and the head train with torch's Nesterov SGD. Neither
pytorch_optimizer's Muon (AdamW for the rest, no weight normalisation) nor torch.optim.Muon
(2-D only) is that rule, so `FilterMuon` writes it out. `MuonWithSGD` holds it and
torch.optim.SGD under one list of parameter groups and one state (`MuonAndRest`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from optbench.errors import UserError
from optbench.optim.muon import MuonAndRest, muon_kwargs, split_groups
from optbench.optim.registry import optimizer_info

# What the builder takes for itself: the SGD part's settings (weight_decay: the groups' decay,
# which only the SGD part applies); the other keys go to FilterMuon.
# airbench's quintic Newton-Schulz coefficients, chosen to maximise the slope at zero.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: Tensor, steps: int, eps: float = 1e-7) -> Tensor:
    r"""An approximate orthogonalisation U S' V^T of g = U S V^T (S' roughly uniform in
    [0.5, 1.5]), in bfloat16:

        X <- g / (||g||_F + eps);   k times: A = X X^T,  X <- a X + (b A + c A A) X
    """
    a, b, c = NS_COEFFICIENTS
    x = g.bfloat16()
    x = x / (x.norm() + eps)
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class FilterMuon(torch.optim.Optimizer):
    """Muon as airbench94_muon runs it: weight-normalised filters, Nesterov momentum
    orthogonalised by `ns_steps` Newton-Schulz iterations (Jordan et al. 2024)."""

    def __init__(
        self,
        params: Any,
        lr: float = 0.24,
        momentum: float = 0.6,
        nesterov: bool = True,
        ns_steps: int = 3,
        normalize_weights: bool = True,
    ) -> None:
        if not lr >= 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov needs a momentum > 0")
        if not (isinstance(ns_steps, int) and ns_steps >= 1):
            raise ValueError(f"ns_steps must be an integer >= 1, got {ns_steps}")
        defaults = {"lr": lr, "momentum": momentum, "nesterov": nesterov, "ns_steps": ns_steps,
                    "normalize_weights": normalize_weights}  # fmt: skip
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        r"""For each filter bank W (out_channels rows) with gradient g:

        b <- mu b + g;   u <- g + mu b (Nesterov) or b
        W <- W sqrt(rows) / ||W||_F            (normalize_weights)
        W <- W - lr NS(u as rows x rest)
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            mu = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                b = state["momentum_buffer"]
                b.mul_(mu).add_(p.grad)
                u = p.grad.add(b, alpha=mu) if group["nesterov"] else b
                if group["normalize_weights"]:
                    p.mul_(len(p) ** 0.5 / p.norm())
                update = newton_schulz(u.reshape(len(u), -1), group["ns_steps"]).view(u.shape)
                p.add_(update.to(p.dtype), alpha=-group["lr"])
        return loss


class MuonWithSGD(MuonAndRest):
    """`FilterMuon` on the groups with `use_muon`, torch.optim.SGD on the others."""

    muon_class = FilterMuon
    rest_class = torch.optim.SGD


def build_muon_sgd(
    groups: list[dict[str, Any]], cfg: DictConfig, device: torch.device
) -> torch.optim.Optimizer:
    """Filters and hidden matrices to Muon (no weight decay: their norm is reset each step);
    the rest to Nesterov SGD from its own base LR, `sgd_lr`, with the groups' weight decay."""
    split: list[dict[str, Any]] = []
    for group, muon, sgd in split_groups(groups, True, cfg.name):
        scale = group.get("lr_scale", 1.0)
        if muon["params"]:
            split.append(
                {**muon, "name": f"muon/{group['name']}", "use_muon": True, "lr_scale": scale,
                 "lr": group["lr"]}
            )  # fmt: skip
        if sgd["params"]:
            split.append(
                {**sgd, "name": f"sgd/{group['name']}", "use_muon": False, "lr_scale": scale,
                 "base_lr": cfg.sgd_lr, "lr": cfg.sgd_lr * scale, "momentum": cfg.sgd_momentum,
                 "nesterov": True, "weight_decay": group["weight_decay"]}
            )  # fmt: skip
    try:
        return MuonWithSGD(split, **muon_kwargs(cfg, optimizer_info(cfg.name).own_keys))
    except (ValueError, TypeError) as err:
        raise UserError(f"optimizer={cfg.name}: {err}") from None
