"""A user's own package, written outside optbench by the tests that need one: an optimizer
class, a schedule function and a model, as the optimizer chapter has readers write them, plus
an `OptimizerInfo` for the entry-point group and a few deliberately broken pieces."""

from __future__ import annotations

from pathlib import Path

OPT = '''
import torch

from optbench.optim import OptimizerInfo


class MyAdam(torch.optim.Optimizer):
    """Adam from scratch, in torch.optim.Adam's order of operations."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state["exp_avg"].lerp_(grad, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step = state["step"]
                denom = (state["exp_avg_sq"].sqrt() / (1 - beta2**step) ** 0.5).add_(group["eps"])
                p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / (1 - beta1**step))


class MyRMSprop(torch.optim.Optimizer):
    """RMSprop from scratch: v = a v + (1 - a) g^2, p -= lr g / (sqrt(v) + eps)."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.zeros_like(p)
                v = state["square_avg"].mul_(group["alpha"])
                v.addcmul_(p.grad, p.grad, value=1 - group["alpha"])
                p.addcdiv_(p.grad, v.sqrt().add_(group["eps"]), value=-group["lr"])


class HeavyBall(torch.optim.Optimizer):
    """Momentum SGD whose buffer it calls `velocity`, and says so."""

    first_moment_keys = {"velocity": "sum"}

    def __init__(self, params, lr=0.01, momentum=0.9):
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                v = self.state[p].setdefault("velocity", torch.zeros_like(p))
                v.mul_(group["momentum"]).add_(p.grad)
                p.add_(v, alpha=-group["lr"])


class NeedsRealNumbers(MyAdam):
    """Reads a weight's value while it is built: impossible on the meta device."""

    def __init__(self, params, lr=1e-3):
        params = list(params)
        for group in params:
            for p in group["params"]:
                float(p.detach().flatten()[0])
        super().__init__(params, lr=lr)


def not_a_class(params, lr=1e-3):
    return MyAdam(params, lr=lr)


MY_ADAM = OptimizerInfo(
    "my_adam", "Adam from scratch, registered by its package", "userpkg.opt.MyAdam",
    "2 x params", config={"lr": 3.0e-3, "betas": [0.9, 0.999], "weight_decay": 0.0},
)
'''

SCHED = """
import math


def half_cosine(step, total_steps):
    return 0.5 * (1 + math.cos(math.pi * step / total_steps))


def nan_at_three(step, total_steps):
    return math.nan if step == 3 else 1.0


def one_argument(step):
    return 1.0
"""

MODELS = """
import math

from torch import nn


class Net(nn.Module):
    def __init__(self, input_shape, num_classes, hidden=32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.ReLU(),
            nn.LayerNorm(hidden),
        )
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.head(self.body(x))
"""

# The same optimizer as a YAML in the user's own config folder (--config-dir).
MY_ADAM_YAML = """# My from-scratch Adam.
name: yaml_adam
target: userpkg.opt.MyAdam
lr: 3.0e-3
betas: [0.9, 0.999]
weight_decay: 0.0
"""


def write_user_package(root: Path) -> Path:
    """`root/userpkg` (importable from `root`) and `root/my_configs/optimizer/yaml_adam.yaml`."""
    package = root / "userpkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name, text in (("opt", OPT), ("sched", SCHED), ("models", MODELS)):
        (package / f"{name}.py").write_text(text)
    configs = root / "my_configs" / "optimizer"
    configs.mkdir(parents=True)
    (configs / "yaml_adam.yaml").write_text(MY_ADAM_YAML)
    return root


def install_user_package(site: Path) -> Path:
    """The package installed into `site` as pip would: its files and a .dist-info whose
    entry_points.txt registers MY_ADAM in optbench's group. Put `site` on PYTHONPATH."""
    write_user_package(site)
    dist = site / "userpkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: userpkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[optbench.optimizers]\nmy_adam = userpkg.opt:MY_ADAM\n")
    return site
