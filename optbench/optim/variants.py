"""The usual mistakes of a hand-written optimizer, one variant per mistake, as data.

Each variant is either a library optimizer under a transformed config (another LR, another
flag, the sibling optimizer) or a small from-scratch rule below, and names the optimizers
(registry names) it applies to. `matching_variants` runs every variant that applies on the
user's weights and batches and returns those whose weights follow the user's at every step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor

from optbench.optim.factory import constructor_defaults, optimizer_from_groups
from optbench.optim.reference.adam import Adam
from optbench.optim.reference.rmsprop import RMSprop
from optbench.optim.reference.sgd import SGD
from optbench.optim.registry import optimizer_info
from optbench.optim.verify import Contender, Groups, Setup, same_weights

# The hyperparameters both optimizers were given, the registry's fixed ones included.
Settings = dict[str, Any]


class _AdamRule(Adam):
    """Adam's arguments and checks, with weight decay L2 (Adam) or decoupled (AdamW)."""

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)
        self.decoupled_weight_decay = decoupled

    def decayed_gradient(self, p: Tensor, group: dict[str, Any]) -> Tensor:
        """p = p - lr * wd * p   (AdamW)   or   g = g + wd * p   (Adam)"""
        lr, wd = group["lr"], group["weight_decay"]
        if wd != 0 and self.decoupled_weight_decay:
            p.mul_(1 - lr * wd)
        return p.grad.add(p, alpha=wd) if wd != 0 and not self.decoupled_weight_decay else p.grad

    def moments(self, p: Tensor, group: dict[str, Any], g: Tensor) -> tuple[int, Tensor, Tensor]:
        """t = t + 1;  m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2"""
        beta1, beta2 = group["betas"]
        state = self.state_of(p, "exp_avg", "exp_avg_sq", step=0)
        state["step"] += 1
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        return state["step"], m, v


class AdamWithoutBiasCorrection(_AdamRule):
    def update(self, group: dict[str, Any], params: list[Tensor]) -> None:
        for p in params:
            _, m, v = self.moments(p, group, self.decayed_gradient(p, group))
            # p = p - lr * m / (sqrt(v) + eps)
            p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-group["lr"])


class AdamEpsInsideRoot(_AdamRule):
    def update(self, group: dict[str, Any], params: list[Tensor]) -> None:
        lr, (beta1, beta2) = group["lr"], group["betas"]
        for p in params:
            t, m, v = self.moments(p, group, self.decayed_gradient(p, group))
            # p = p - lr * m / (1 - beta1^t) / sqrt(v / (1 - beta2^t) + eps)
            denom = (v / (1 - beta2**t)).add_(group["eps"]).sqrt_()
            p.addcdiv_(m, denom, value=-lr / (1 - beta1**t))


class AdamEpsBeforeBiasCorrection(_AdamRule):
    def update(self, group: dict[str, Any], params: list[Tensor]) -> None:
        lr, (beta1, beta2) = group["lr"], group["betas"]
        for p in params:
            t, m, v = self.moments(p, group, self.decayed_gradient(p, group))
            # p = p - lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)
            step_size = lr * (1 - beta2**t) ** 0.5 / (1 - beta1**t)
            p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-step_size)


class AdamWDecayWithoutLR(_AdamRule):
    def update(self, group: dict[str, Any], params: list[Tensor]) -> None:
        lr, (beta1, beta2) = group["lr"], group["betas"]
        for p in params:
            # p = p - wd * p   (not lr * wd * p), then Adam's step on the raw gradient
            p.mul_(1 - group["weight_decay"])
            t, m, v = self.moments(p, group, p.grad)
            # p = p - lr / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^t)) + eps)
            denom = (v.sqrt() / (1 - beta2**t) ** 0.5).add_(group["eps"])
            p.addcdiv_(m, denom, value=-lr / (1 - beta1**t))


class RMSpropEpsInsideRoot(RMSprop):
    def update(self, group: dict[str, Any], params: list[Tensor]) -> None:
        lr, alpha, mu, eps = group["lr"], group["alpha"], group["momentum"], group["eps"]
        for p in params:
            state = self.state_of(p, "square_avg", "grad_avg", "momentum_buffer")
            g = p.grad if group["weight_decay"] == 0 else p.grad.add(p, alpha=group["weight_decay"])
            # s = alpha * s + (1 - alpha) * g^2
            # m = alpha * m + (1 - alpha) * g                      (centered)
            # r = sqrt(s - m^2 + eps)   if centered else   sqrt(s + eps)
            # v = mu * v + g / r;  p = p - lr * v     (with momentum, else p = p - lr * g / r)
            s = state["square_avg"].mul_(alpha).addcmul_(g, g, value=1 - alpha)
            if group["centered"]:
                m = state["grad_avg"].lerp_(g, 1 - alpha)
                r = s.addcmul(m, m, value=-1).add_(eps).sqrt_()
            else:
                r = s.add(eps).sqrt_()
            if mu == 0:
                p.addcdiv_(g, r, value=-lr)
            else:
                p.add_(state["momentum_buffer"].mul_(mu).addcdiv_(g, r), alpha=-lr)


class SGDDecoupledDecay(SGD):
    def update(self, group: dict[str, Any], params: list[Tensor]) -> None:
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        for p in params:
            v, g = self.state_of(p, "momentum_buffer")["momentum_buffer"], p.grad
            # p = p - lr * wd * p
            # v = mu * v + g
            # p = p - lr * (g + mu * v)   if nesterov else   p = p - lr * v
            p.mul_(1 - lr * wd)
            v.mul_(mu).add_(g)
            p.add_(g.add(v, alpha=mu) if group["nesterov"] else v, alpha=-lr)


@dataclass(frozen=True)
class Variant:
    """One mistake: what the user's rule does (`mistake`, `rule`), the optimizers it applies
    to, and either `library` (the registry name, settings and LR factor of the library
    optimizer that computes it) or `implementation` (a from-scratch rule taking the same
    settings, plus `options(name)`)."""

    mistake: str
    rule: str
    families: tuple[str, ...]
    applies: Callable[[Settings], bool]
    library: Callable[[str, Settings], tuple[str, Settings, float]] | None = None
    implementation: type[torch.optim.Optimizer] | None = None
    options: Callable[[str], dict[str, Any]] = lambda name: {}
    note: str = ""


SGD_FAMILY = ("sgd", "momentum", "nesterov")
ADAM_FAMILY = ("adam", "adamw")


def _momentum(s: Settings) -> bool:
    return s.get("momentum", 0) > 0 and s.get("dampening", 0) == 0


def _heavy_ball(s: Settings) -> bool:
    return _momentum(s) and not s.get("nesterov", False)


def _nesterov(s: Settings) -> bool:
    return _momentum(s) and s.get("nesterov", False)


def _decays(s: Settings) -> bool:
    return s.get("weight_decay", 0) > 0


def _decoupled(name: str) -> dict[str, Any]:
    return {"decoupled": name == "adamw"}


VARIANTS: list[Variant] = [
    # EMA momentum, v_0 = 0, v_t = b v_{t-1} + (1 - b) g_t, p -= lr_t v_t, against torch's
    # u_1 = g_1 (its first buffer is the gradient itself), u_t = b u_{t-1} + g_t, p -= lr'_t u_t:
    # v_1 = (1 - b) g_1 = (1 - b) u_1, and if v_{t-1} = (1 - b) u_{t-1} then
    # v_t = (1 - b)(b u_{t-1} + g_t) = (1 - b) u_t. So the steps are equal with
    # lr'_t = (1 - b) lr_t, at every step and under any LR schedule (b constant); Nesterov's
    # (1 - b) g + b v = (1 - b)(g + b u) too. torch's `dampening=b` is NOT this rule: it skips
    # the dampening on the first step, u_1 = g_1, so u_t = v_t + b^t g_1 (the next variant).
    Variant(
        "EMA momentum", "v = b v + (1 - b) g", SGD_FAMILY, _momentum,
        library=lambda name, s: (name, s, 1 - s["momentum"]),
    ),
    Variant(
        "EMA momentum started at the gradient", "v = g at step 1, then v = b v + (1 - b) g",
        SGD_FAMILY, _heavy_ball,
        library=lambda name, s: (name, {**s, "dampening": s["momentum"]}, 1.0),
    ),
    Variant(
        "SGD in velocity form", "v = mu v - lr g; p += v", SGD_FAMILY, _heavy_ball,
        implementation=SGD, options=lambda name: {"convention": "velocity"},
        note="equal to torch.optim.SGD at a constant LR, not under a schedule",
    ),
    Variant(
        "Sutskever's look-ahead Nesterov", "v = mu v - lr g; p += mu v - lr g", SGD_FAMILY,
        _nesterov, implementation=SGD, options=lambda name: {"convention": "velocity"},
        note="Bengio et al. 2013's form; equal to torch's Nesterov at a constant LR only",
    ),
    Variant(
        "Nesterov left out", "v = mu v + g; p -= lr v", SGD_FAMILY, _nesterov,
        library=lambda name, s: (name, {**s, "nesterov": False}, 1.0),
    ),
    Variant(
        "Nesterov where heavy ball was asked", "p -= lr (g + mu v)", SGD_FAMILY, _heavy_ball,
        library=lambda name, s: (name, {**s, "nesterov": True}, 1.0),
    ),
    Variant(
        "SGD with decoupled weight decay", "p -= lr wd p outside the momentum", SGD_FAMILY,
        lambda s: _momentum(s) and _decays(s), implementation=SGDDecoupledDecay,
    ),
    Variant(
        "Adam without bias correction", "p -= lr m / (sqrt(v) + eps)", ADAM_FAMILY,
        lambda s: True, implementation=AdamWithoutBiasCorrection, options=_decoupled,
    ),
    Variant(
        "Adam with eps inside the square root", "p -= lr m_hat / sqrt(v_hat + eps)",
        ADAM_FAMILY, lambda s: True, implementation=AdamEpsInsideRoot, options=_decoupled,
    ),
    Variant(
        "Adam with eps added before the bias correction",
        "p -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)", ADAM_FAMILY, lambda s: True,
        implementation=AdamEpsBeforeBiasCorrection, options=_decoupled,
        note="Kingma & Ba's 'efficient' form, TensorFlow's",
    ),
    Variant(
        "L2 instead of decoupled weight decay", "g = g + wd p", ("adamw",), _decays,
        library=lambda name, s: ("adam", s, 1.0),
    ),
    Variant(
        "decoupled instead of L2 weight decay", "p -= lr wd p", ("adam",), _decays,
        library=lambda name, s: ("adamw", s, 1.0),
    ),
    Variant(
        "AdamW with weight decay not scaled by the LR", "p -= wd p", ("adamw",), _decays,
        implementation=AdamWDecayWithoutLR, options=_decoupled,
    ),
    Variant(
        "RMSprop with eps inside the square root", "p -= lr g / sqrt(s + eps)", ("rmsprop",),
        lambda s: True, implementation=RMSpropEpsInsideRoot,
    ),
    Variant(
        "centered RMSprop", "divides by sqrt(s - m^2)", ("rmsprop",),
        lambda s: not s.get("centered", False),
        library=lambda name, s: (name, {**s, "centered": True}, 1.0),
    ),
    Variant(
        "uncentered RMSprop", "divides by sqrt(s)", ("rmsprop",),
        lambda s: s.get("centered", False),
        library=lambda name, s: (name, {**s, "centered": False}, 1.0),
    ),
]  # fmt: skip


@dataclass(frozen=True)
class Match:
    variant: Variant
    what: str  # the optimizer that computes it, e.g. "torch.optim.SGD at lr x 0.1"

    def __str__(self) -> str:
        v = self.variant
        return (
            f"matches {self.what} ({v.mistake}: {v.rule})"
            if v.library
            else f"matches {v.mistake}: {v.rule}"
        )


def library_contender(
    name: str, impl: str, settings: Settings, lr_factor: float = 1.0
) -> tuple[Contender, str]:
    """Optimizer `name` with `settings` through the factory, and the class it is."""
    info = optimizer_info(name)
    # The registry's fixed arguments are the factory's to add (a reference takes only those
    # its signature names); a setting that changes one stays.
    given = {k: v for k, v in settings.items() if k not in info.defaults or info.defaults[k] != v}
    cfg = OmegaConf.create({"name": name, "impl": impl, **given})
    cls = (info.reference if impl == "reference" else info.backend) or name

    def build(groups: Groups) -> torch.optim.Optimizer:
        dicts = [{"params": params, "lr_scale": scale} for params, scale in groups]
        return optimizer_from_groups(dicts, cfg, torch.device("cpu"))

    return Contender(cls, build, settings["lr"] * lr_factor), cls


def rule_contender(
    cls: type[torch.optim.Optimizer], settings: Settings, options: dict[str, Any]
) -> Contender:
    def build(groups: Groups) -> torch.optim.Optimizer:
        dicts = [{"params": params, "lr": settings["lr"] * scale} for params, scale in groups]
        return cls(dicts, **settings, **options)

    return Contender(cls.__name__, build, settings["lr"])


def candidates(name: str, impl: str, settings: Settings) -> list[tuple[Variant, Contender, str]]:
    """The variants that apply to optimizer `name` with `settings`, each ready to run."""
    found = []
    for variant in VARIANTS:
        if name not in variant.families or not variant.applies(settings):
            continue
        if variant.library is not None:
            other, changed, factor = variant.library(name, settings)
            contender, cls = library_contender(other, impl, changed, factor)
            edits = [f"{k}={v}" for k, v in changed.items() if settings.get(k) != v]
            what = cls + (f" at lr x {factor:.4g}" if factor != 1 else "")
            what += f" with {', '.join(edits)}" if edits else ""
            found.append((variant, contender, what))
        else:
            options = variant.options(name)
            accepted = constructor_defaults(variant.implementation)
            if settings.keys() - accepted.keys():  # a setting this rule has no place for
                continue
            contender = rule_contender(variant.implementation, settings, options)
            found.append((variant, contender, variant.implementation.__name__))
    return found


def matching_variants(
    user: Contender, name: str, impl: str, settings: Settings, setup: Setup, dtype: torch.dtype
) -> tuple[list[Match], int]:
    """The variants whose weights follow the user's at every step, and how many were tried."""
    tried = candidates(name, impl, settings)
    matches = [
        Match(variant, what)
        for variant, contender, what in tried
        if same_weights(user, contender, setup, dtype)
    ]
    return matches, len(tried)
