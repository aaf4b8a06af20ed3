"""optbench's reference optimizers: step for step equal to their libraries, and what the
three conventions of SGD momentum do when the LR or the momentum changes mid-run."""

from __future__ import annotations

import copy
import functools
import io
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
import pytorch_optimizer
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optbench.errors import UserError
from optbench.optim import OPTIMIZERS, build_optimizer
from optbench.optim import reference as ref
from optbench.optim.registry import load_object
from optbench.train.trainer import train

STEPS = 50
# Library comparisons run in float32. The references repeat the libraries' operations in the
# same order, so the parameters agree bit for bit; the check allows the brief's 1e-6 relative,
# plus 1e-7 absolute (about one float32 ulp at the weights' scale) for coordinates near 0.
RTOL, ATOL = 1e-6, 1e-7
# The convention identities are equal in exact arithmetic but not operation for operation, so
# they run in float64, where 50 steps stay within ~1e-12 relative of each other.
F64 = torch.float64

Batches = list[tuple[Tensor, Tensor]]
Schedule = Callable[[int, dict[str, Any]], None]


@pytest.fixture(autouse=True)
def one_thread():
    """Tensors this small only lose time to a second intra-op thread, more so on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(dtype: torch.dtype = torch.float32) -> nn.Module:
    """A conv layer and a linear layer, both with a bias, the same weights every call."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    return model.to(dtype)


def make_batches(dtype: torch.dtype = torch.float32, steps: int = STEPS) -> Batches:
    gen = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(16, 3, 8, 8, generator=gen, dtype=dtype),
            torch.randint(0, 10, (16,), generator=gen),
        )
        for _ in range(steps)
    ]


def flat(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def trajectory(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Batches,
    schedule: Schedule | None = None,
) -> tuple[list[Tensor], list[Tensor]]:
    """Train on `batches`; the flat parameters before each step and after the last, and the
    flat gradient of each step. `schedule(step, group)` may edit each group before a step."""
    params, grads = [flat(model)], []
    for step, (x, y) in enumerate(batches):
        for group in optimizer.param_groups:
            if schedule is not None:
                schedule(step, group)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        optimizer.step()
        params.append(flat(model))
    return params, grads


def final_params(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Batches) -> Tensor:
    return trajectory(model, optimizer, batches)[0][-1]


# What optimizer=cadamw builds (its registry defaults): AdamP without its projection.
CAUTIOUS_ADAMW = functools.partial(pytorch_optimizer.AdamP, **OPTIMIZERS["cadamw"].defaults)

# (id, library class, reference class, keyword arguments for both)
LIBRARY_CASES = [
    ("sgd", torch.optim.SGD, ref.SGD, dict(lr=0.1)),
    ("sgd-wd", torch.optim.SGD, ref.SGD, dict(lr=0.1, weight_decay=0.01)),
    ("momentum", torch.optim.SGD, ref.SGD, dict(lr=0.05, momentum=0.9)),
    ("momentum-wd", torch.optim.SGD, ref.SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    ("nesterov", torch.optim.SGD, ref.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    (
        "nesterov-wd",
        torch.optim.SGD,
        ref.SGD,
        dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    ),
    ("adagrad", torch.optim.Adagrad, ref.Adagrad, dict(lr=0.05)),
    (
        "adagrad-decay-wd",
        torch.optim.Adagrad,
        ref.Adagrad,
        dict(lr=0.05, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1),
    ),
    ("rmsprop", torch.optim.RMSprop, ref.RMSprop, dict(lr=1e-3)),
    ("rmsprop-wd", torch.optim.RMSprop, ref.RMSprop, dict(lr=1e-3, weight_decay=0.01)),
    ("rmsprop-momentum", torch.optim.RMSprop, ref.RMSprop, dict(lr=1e-3, momentum=0.9)),
    ("rmsprop-centered", torch.optim.RMSprop, ref.RMSprop, dict(lr=1e-3, centered=True)),
    (
        "rmsprop-centered-momentum-wd",
        torch.optim.RMSprop,
        ref.RMSprop,
        dict(lr=1e-3, alpha=0.9, momentum=0.9, centered=True, weight_decay=0.01),
    ),
    ("adam", torch.optim.Adam, ref.Adam, dict(lr=1e-2)),
    ("adam-wd", torch.optim.Adam, ref.Adam, dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.01)),
    ("adamw-no-wd", torch.optim.AdamW, ref.AdamW, dict(lr=1e-2, weight_decay=0.0)),
    ("adamw-wd", torch.optim.AdamW, ref.AdamW, dict(lr=1e-2, weight_decay=0.1)),
    ("lion", pytorch_optimizer.Lion, ref.Lion, dict(lr=1e-3)),
    (
        "lion-wd",
        pytorch_optimizer.Lion,
        ref.Lion,
        dict(lr=1e-3, betas=(0.8, 0.95), weight_decay=0.5),
    ),
    ("lamb", pytorch_optimizer.Lamb, ref.Lamb, dict(lr=1e-2)),
    ("lamb-wd", pytorch_optimizer.Lamb, ref.Lamb, dict(lr=1e-2, weight_decay=0.1)),
    ("adopt", pytorch_optimizer.ADOPT, ref.ADOPT, dict(lr=1e-3)),
    ("adopt-l2", pytorch_optimizer.ADOPT, ref.ADOPT, dict(lr=1e-3, weight_decay=0.01)),
    (
        "adopt-decoupled",
        pytorch_optimizer.ADOPT,
        ref.ADOPT,
        dict(lr=1e-3, betas=(0.8, 0.99), weight_decay=0.1, weight_decouple=True),
    ),
    ("cadamw", CAUTIOUS_ADAMW, ref.CautiousAdamW, dict(lr=1e-2)),
    ("cadamw-wd", CAUTIOUS_ADAMW, ref.CautiousAdamW, dict(lr=1e-2, weight_decay=0.1)),
]


@pytest.mark.parametrize(
    ("library", "reference", "kwargs"),
    [c[1:] for c in LIBRARY_CASES],
    ids=[c[0] for c in LIBRARY_CASES],
)
def test_reference_matches_its_library_over_50_steps(library, reference, kwargs):
    batches = make_batches()
    lib_model, ref_model = make_model(), make_model()
    lib_opt = library(lib_model.parameters(), **kwargs)
    ref_opt = reference(ref_model.parameters(), **kwargs)
    start = flat(lib_model)

    lib_params = final_params(lib_model, lib_opt, batches)
    ref_params = final_params(ref_model, ref_opt, batches)

    assert (lib_params - start).abs().max() > 1e-2  # the run really moved the weights
    torch.testing.assert_close(ref_params, lib_params, rtol=RTOL, atol=ATOL)
    # The same state key names, holding the same values. The step is an int here; torch keeps
    # a tensor per parameter, pytorch_optimizer an int per group.
    for lib_p, ref_p in zip(lib_model.parameters(), ref_model.parameters(), strict=True):
        lib_state, ref_state = lib_opt.state[lib_p], ref_opt.state[ref_p]
        for key, value in ref_state.items():
            if key == "step":
                lib_step = lib_state.get("step", lib_opt.param_groups[0].get("step"))
                assert value == float(lib_step) == STEPS
            else:
                torch.testing.assert_close(value, lib_state[key], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_lamb_matches_the_library_where_the_weight_norm_is_clamped_or_zero(weight_decay):
    # A weight matrix of norm > 10 (clamped to 10) and a bias of norm 0 (trust ratio 1).
    lib_model, ref_model = make_model(), make_model()
    for model in (lib_model, ref_model):
        with torch.no_grad():
            model[3].weight.mul_(20)
            model[0].bias.zero_()
    assert lib_model[3].weight.norm() > 10
    batches = make_batches()
    kwargs = dict(lr=1e-2, weight_decay=weight_decay)
    lib_params = final_params(
        lib_model, pytorch_optimizer.Lamb(lib_model.parameters(), **kwargs), batches
    )
    ref_params = final_params(ref_model, ref.Lamb(ref_model.parameters(), **kwargs), batches)
    torch.testing.assert_close(ref_params, lib_params, rtol=RTOL, atol=ATOL)


# One configuration of each reference optimizer with all of its state in use.
REFERENCE_CASES = [
    (
        "sgd-pytorch-nesterov",
        ref.SGD,
        dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    ),
    ("sgd-ema-nesterov", ref.SGD, dict(lr=0.5, momentum=0.9, nesterov=True, convention="ema")),
    ("sgd-velocity", ref.SGD, dict(lr=0.05, momentum=0.9, convention="velocity")),
    ("adagrad", ref.Adagrad, dict(lr=0.05, lr_decay=0.01, weight_decay=0.01)),
    (
        "rmsprop-centered-nesterov",
        ref.RMSprop,
        dict(lr=1e-3, momentum=0.9, centered=True, nesterov=True, weight_decay=0.01),
    ),
    ("adam", ref.Adam, dict(lr=1e-2, weight_decay=0.01)),
    ("adamw", ref.AdamW, dict(lr=1e-2, weight_decay=0.1)),
    ("lion", ref.Lion, dict(lr=1e-3, weight_decay=0.5)),
    ("lamb", ref.Lamb, dict(lr=1e-2, weight_decay=0.1)),
    ("adopt", ref.ADOPT, dict(lr=1e-3, weight_decay=0.01)),
    ("cadamw", ref.CautiousAdamW, dict(lr=1e-2, weight_decay=0.1)),
]
REFERENCE_IDS = [c[0] for c in REFERENCE_CASES]


@pytest.mark.parametrize(
    ("reference", "kwargs"), [c[1:] for c in REFERENCE_CASES], ids=REFERENCE_IDS
)
def test_state_dict_round_trip_continues_bit_for_bit(reference, kwargs):
    batches = make_batches(steps=20)
    model = make_model()
    optimizer = reference(model.parameters(), **kwargs)
    trajectory(model, optimizer, batches[:10])

    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_model = copy.deepcopy(model)
    resumed = reference(resumed_model.parameters(), **kwargs)
    resumed.load_state_dict(saved)

    uninterrupted = final_params(model, optimizer, batches[10:])
    continued = final_params(resumed_model, resumed, batches[10:])
    assert torch.equal(continued, uninterrupted)
    assert len(resumed.state) == len(list(model.parameters()))


@pytest.mark.parametrize(
    ("reference", "kwargs"), [c[1:] for c in REFERENCE_CASES], ids=REFERENCE_IDS
)
def test_parameters_without_a_gradient_are_skipped(reference, kwargs):
    model = make_model()
    unused = nn.Parameter(torch.ones(3))
    optimizer = reference([*model.parameters(), unused], **kwargs)
    trajectory(model, optimizer, make_batches(steps=3))
    assert torch.equal(unused.detach(), torch.ones(3))
    assert unused not in optimizer.state
    assert all(optimizer.state[p] for p in model.parameters())


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_ema_momentum_is_pytorch_momentum_at_lr_times_one_minus_beta(nesterov, weight_decay):
    lr, beta = 0.5, 0.9
    batches = make_batches(F64)
    torch_model, ema_model = make_model(F64), make_model(F64)
    torch_opt = torch.optim.SGD(
        torch_model.parameters(),
        lr=lr * (1 - beta),
        momentum=beta,
        nesterov=nesterov,
        weight_decay=weight_decay,
    )
    ema_opt = ref.SGD(
        ema_model.parameters(),
        lr=lr,
        momentum=beta,
        nesterov=nesterov,
        weight_decay=weight_decay,
        convention="ema",
    )
    torch.testing.assert_close(
        final_params(ema_model, ema_opt, batches),
        final_params(torch_model, torch_opt, batches),
        rtol=1e-6,
        atol=0,
    )


def halve_lr_at_25(step: int, group: dict[str, Any]) -> None:
    if step == 25:
        group["lr"] /= 2


def momentum_to_half_at_25(step: int, group: dict[str, Any]) -> None:
    if step == 25:
        group["momentum"] = 0.5


def ema_and_pytorch_runs(schedule: Schedule) -> tuple[Tensor, Tensor]:
    """Final weights of EMA momentum at lr and of PyTorch momentum at lr * (1 - beta)."""
    lr, beta = 0.5, 0.9
    batches = make_batches(F64)
    torch_model, ema_model = make_model(F64), make_model(F64)
    torch_opt = torch.optim.SGD(torch_model.parameters(), lr=lr * (1 - beta), momentum=beta)
    ema_opt = ref.SGD(ema_model.parameters(), lr=lr, momentum=beta, convention="ema")
    ema_final = trajectory(ema_model, ema_opt, batches, schedule)[0][-1]
    torch_final = trajectory(torch_model, torch_opt, batches, schedule)[0][-1]
    return ema_final, torch_final


def test_ema_and_pytorch_momentum_stay_equal_when_the_lr_is_halved():
    # The EMA buffer is (1 - beta) times PyTorch's whatever the LR does, because both apply the
    # LR from outside the buffer: halving both LRs keeps the trajectories equal.
    ema_final, torch_final = ema_and_pytorch_runs(halve_lr_at_25)
    torch.testing.assert_close(ema_final, torch_final, rtol=1e-6, atol=0)


def test_ema_and_pytorch_momentum_part_when_the_momentum_changes():
    # What does separate them is a change of beta (OneCycle cycles it): the factor between the
    # buffers, 1 - beta, is then no longer one constant.
    ema_final, torch_final = ema_and_pytorch_runs(momentum_to_half_at_25)
    assert (ema_final - torch_final).abs().max() > 1e-3


@pytest.mark.parametrize("nesterov", [False, True])
def test_velocity_momentum_is_pytorch_momentum_under_a_constant_lr(nesterov):
    batches = make_batches(F64)
    torch_model, velocity_model = make_model(F64), make_model(F64)
    kwargs = dict(lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=0.01)
    torch_opt = torch.optim.SGD(torch_model.parameters(), **kwargs)
    velocity_opt = ref.SGD(velocity_model.parameters(), **kwargs, convention="velocity")
    torch.testing.assert_close(
        final_params(velocity_model, velocity_opt, batches),
        final_params(torch_model, torch_opt, batches),
        rtol=1e-6,
        atol=0,
    )


def test_velocity_momentum_keeps_the_old_lr_in_its_buffer_when_the_lr_is_halved():
    lr, mu = 0.05, 0.9
    batches = make_batches(F64)
    torch_model, velocity_model = make_model(F64), make_model(F64)
    torch_opt = torch.optim.SGD(torch_model.parameters(), lr=lr, momentum=mu)
    velocity_opt = ref.SGD(velocity_model.parameters(), lr=lr, momentum=mu, convention="velocity")
    torch_params, torch_grads = trajectory(torch_model, torch_opt, batches, halve_lr_at_25)
    velocity_params, velocity_grads = trajectory(
        velocity_model, velocity_opt, batches, halve_lr_at_25
    )

    # Equal up to the change...
    torch.testing.assert_close(velocity_params[25], torch_params[25], rtol=1e-6, atol=0)
    # ...then, in the first step at lr / 2, both take the same -lr/2 * g, but the velocity form
    # carries on mu times its last step, made at the old LR, where PyTorch rescales its whole
    # buffer by the new LR: the momentum part of the velocity step is twice PyTorch's.
    new_lr = lr / 2
    torch_momentum_part = torch_params[26] - torch_params[25] + new_lr * torch_grads[25]
    velocity_momentum_part = velocity_params[26] - velocity_params[25] + new_lr * velocity_grads[25]
    torch.testing.assert_close(
        velocity_momentum_part, 2 * torch_momentum_part, rtol=1e-6, atol=1e-12
    )
    # The old-LR momentum decays as mu^k, but the trajectories stay apart.
    assert (velocity_params[-1] - torch_params[-1]).abs().max() > 1e-3


def rmsprop_nesterov_by_element(
    model: nn.Module,
    batches: Batches,
    lr: float,
    alpha: float,
    eps: float,
    mu: float,
    wd: float,
    centered: bool,
) -> Tensor:
    """RMSprop with Nesterov momentum, one number at a time in Python floats."""
    params = list(model.parameters())
    square_avg = [[0.0] * p.numel() for p in params]
    grad_avg = [[0.0] * p.numel() for p in params]
    buf = [[0.0] * p.numel() for p in params]
    for x, y in batches:
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for k, p in enumerate(params):
                weights, grads = p.flatten().tolist(), p.grad.flatten().tolist()
                for i, w in enumerate(weights):
                    g = grads[i] + wd * w
                    square_avg[k][i] = alpha * square_avg[k][i] + (1 - alpha) * g * g
                    variance = square_avg[k][i]
                    if centered:
                        grad_avg[k][i] = alpha * grad_avg[k][i] + (1 - alpha) * g
                        variance -= grad_avg[k][i] ** 2
                    normalised = g / (math.sqrt(variance) + eps)
                    buf[k][i] = mu * buf[k][i] + normalised
                    weights[i] = w - lr * (normalised + mu * buf[k][i])
                p.copy_(torch.tensor(weights, dtype=p.dtype).view_as(p))
    return flat(model)


@pytest.mark.parametrize(("centered", "weight_decay"), [(False, 0.0), (True, 0.01)])
def test_rmsprop_nesterov_matches_a_per_element_loop(centered, weight_decay):
    kwargs = dict(
        lr=1e-3, alpha=0.9, eps=1e-8, momentum=0.9, weight_decay=weight_decay, centered=centered
    )
    batches = make_batches(F64)
    loop_model, ref_model, heavy_ball_model = make_model(F64), make_model(F64), make_model(F64)
    expected = rmsprop_nesterov_by_element(
        loop_model,
        batches,
        kwargs["lr"],
        kwargs["alpha"],
        kwargs["eps"],
        kwargs["momentum"],
        weight_decay,
        centered,
    )
    nesterov = final_params(
        ref_model, ref.RMSprop(ref_model.parameters(), **kwargs, nesterov=True), batches
    )
    heavy_ball = final_params(
        heavy_ball_model, torch.optim.RMSprop(heavy_ball_model.parameters(), **kwargs), batches
    )

    torch.testing.assert_close(nesterov, expected, rtol=1e-6, atol=1e-12)
    assert (nesterov - heavy_ball).abs().max() > 1e-3  # the option changes the rule


BAD_HYPERPARAMETERS = [
    (ref.SGD, dict(lr=-1), "lr must be positive, got -1"),
    (ref.SGD, dict(lr=0.1, momentum=1.0), "momentum must be in [0, 1), got 1.0"),
    (ref.SGD, dict(lr=0.1, weight_decay=-0.1), "weight_decay must be non-negative, got -0.1"),
    (
        ref.SGD,
        dict(lr=0.1, convention="nag"),
        "convention must be one of 'pytorch', 'ema', 'velocity'; got 'nag'",
    ),
    (ref.SGD, dict(lr=0.1, nesterov=True), "nesterov=True needs momentum > 0, got momentum=0"),
    (ref.Adagrad, dict(eps=0), "eps must be positive, got 0"),
    (ref.Adagrad, dict(lr_decay=-0.5), "lr_decay must be non-negative, got -0.5"),
    (
        ref.Adagrad,
        dict(initial_accumulator_value=-1),
        "initial_accumulator_value must be non-negative, got -1",
    ),
    (ref.RMSprop, dict(alpha=1.0), "alpha must be in [0, 1), got 1.0"),
    (ref.RMSprop, dict(momentum=-0.1), "momentum must be in [0, 1), got -0.1"),
    (ref.RMSprop, dict(nesterov=True), "nesterov=True needs momentum > 0, got momentum=0"),
    (ref.Adam, dict(betas=(0.9, 1.0)), "betas must be two numbers in [0, 1), got (0.9, 1.0)"),
    (ref.Adam, dict(eps=-1e-8), "eps must be positive, got -1e-08"),
    (ref.AdamW, dict(lr=0), "lr must be positive, got 0"),
    (ref.Lion, dict(betas=(-0.1, 0.99)), "betas must be two numbers in [0, 1), got (-0.1, 0.99)"),
    (ref.Lion, dict(weight_decay=-1), "weight_decay must be non-negative, got -1"),
    (ref.Lamb, dict(eps=0.0), "eps must be positive, got 0.0"),
    (ref.Lamb, dict(betas=(0.9,)), "betas must be two numbers in [0, 1), got (0.9,)"),
    (ref.ADOPT, dict(eps=0), "eps must be positive, got 0"),
    (ref.CautiousAdamW, dict(weight_decay=-0.1), "weight_decay must be non-negative, got -0.1"),
]


@pytest.mark.parametrize(("reference", "kwargs", "message"), BAD_HYPERPARAMETERS)
def test_bad_hyperparameters_raise_a_clear_value_error(reference, kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        reference([nn.Parameter(torch.zeros(2))], **kwargs)


REGISTRY_REFERENCES = {
    "sgd": ref.SGD,
    "momentum": ref.SGD,
    "nesterov": ref.SGD,
    "adagrad": ref.Adagrad,
    "rmsprop": ref.RMSprop,
    "adam": ref.Adam,
    "adamw": ref.AdamW,
    "lion": ref.Lion,
    "lamb": ref.Lamb,
    "adopt": ref.ADOPT,
    "cadamw": ref.CautiousAdamW,
}


@pytest.mark.parametrize(("name", "reference"), REGISTRY_REFERENCES.items())
def test_the_factory_builds_the_reference_from_the_documented_config(fast_cfg, name, reference):
    cfg = fast_cfg(f"optimizer={name}", "optimizer.impl=reference")
    assert load_object(OPTIMIZERS[name].reference) is reference
    optimizer = build_optimizer(make_model(), cfg.optimizer, cfg.param_groups, torch.device("cpu"))
    assert type(optimizer) is reference
    assert optimizer.param_groups[0]["lr"] == cfg.optimizer.lr


def test_the_momentum_convention_is_an_option_of_the_config(fast_cfg):
    ema = fast_cfg("optimizer=momentum", "optimizer.impl=reference", "+optimizer.convention=ema")
    optimizer = build_optimizer(make_model(), ema.optimizer, ema.param_groups, torch.device("cpu"))
    assert optimizer.param_groups[0]["convention"] == "ema"

    typo = fast_cfg("optimizer=momentum", "optimizer.impl=reference", "+optimizer.convention=emma")
    with pytest.raises(UserError, match="optimizer=momentum: convention must be one of"):
        build_optimizer(make_model(), typo.optimizer, typo.param_groups, torch.device("cpu"))


def test_training_with_the_reference_ends_at_the_library_loss(fast_cfg, tmp_path):
    # The reference repeats torch.optim.Adam's operations in order, so the two runs agree bit
    # for bit (measured: identical losses); 1e-6 relative is the bar the 50-step tests use.
    library = train(fast_cfg("optimizer=adam", "trainer.epochs=1"), tmp_path / "library")
    reference = train(
        fast_cfg("optimizer=adam", "optimizer.impl=reference", "trainer.epochs=1"),
        tmp_path / "reference",
    )
    assert reference["status"] == library["status"] == "completed"
    assert reference["final_train_loss"] == pytest.approx(library["final_train_loss"], rel=1e-6)
    assert reference["final_test_loss"] == pytest.approx(library["final_test_loss"], rel=1e-6)


def test_the_cautious_mask_changes_adamw_and_adopt_skips_its_first_step():
    # C-AdamW is not AdamW (its mask drops steps); ADOPT's first step only fills v.
    batches = make_batches(steps=10)
    adamw_model, cautious_model, adopt_model = make_model(), make_model(), make_model()
    adamw = final_params(adamw_model, torch.optim.AdamW(adamw_model.parameters(), lr=1e-2), batches)
    cautious = final_params(
        cautious_model, ref.CautiousAdamW(cautious_model.parameters(), lr=1e-2), batches
    )
    assert (cautious - adamw).abs().max() > 1e-3
    start = flat(adopt_model)
    adopt = ref.ADOPT(adopt_model.parameters())
    assert torch.equal(final_params(adopt_model, adopt, batches[:1]), start)
    assert not torch.equal(final_params(adopt_model, adopt, batches[1:2]), start)
