"""Momentum you can read, scale, reset and schedule; diagnostics of the optimizer's steps."""

from __future__ import annotations

import pytest
import torch
from conftest import FAST
from helpers import compose_config, scalars
from omegaconf import OmegaConf

from optbench.errors import UserError
from optbench.optim.momentum import (
    momentum_coefficient,
    momentum_norms,
    reset_momentum,
    scale_momentum,
    set_momentum_coefficient,
)
from optbench.run import build_run
from optbench.run.hyperparameters import start_epoch
from optbench.run.schedule_curve import schedule_curve
from optbench.schedules import MomentumControl
from optbench.tracking.diagnostics import StepDiagnostics
from optbench.train.preflight import check_train_config
from optbench.train.trainer import train


def stepped(name: str, steps: int = 3, *overrides: str):
    cfg = compose_config(*FAST, f"optimizer={name}", *overrides)
    setup = build_run(cfg)
    batches = setup.data.train_batches.epoch(0)
    for i in range(steps):
        setup.step([next(batches)], i)
    return setup


@pytest.mark.parametrize("name", ["momentum", "adam", "lion"])
def test_momentum_state_can_be_read_scaled_and_reset(name):
    optimizer = stepped(name).optimizer
    norms = {k: v.item() for k, v in momentum_norms(optimizer).items()}
    assert set(norms) == {"decay", "no_decay"} and all(v > 0 for v in norms.values())
    scale_momentum(optimizer, 0.5)
    assert {k: v.item() for k, v in momentum_norms(optimizer).items()} == pytest.approx(
        {k: v / 2 for k, v in norms.items()}
    )
    reset_momentum(optimizer)
    assert all(v.item() == 0 for v in momentum_norms(optimizer).values())


def test_an_optimizer_without_momentum_says_so():
    with pytest.raises(UserError, match="keeps no momentum"):
        reset_momentum(stepped("adagrad").optimizer)


def test_changing_the_coefficient_can_rescale_sum_buffers():
    optimizer = stepped("momentum").optimizer
    group = optimizer.param_groups[0]
    buffer = optimizer.state[group["params"][0]]["momentum_buffer"]
    before = buffer.clone()
    set_momentum_coefficient(optimizer, group, 0.5, rescale_buffers=True)
    assert momentum_coefficient(group) == 0.5
    torch.testing.assert_close(
        buffer, before * (1 - 0.9) / (1 - 0.5)
    )  # keeps g / (1 - mu) = the step size


def test_adam_style_averages_are_not_rescaled():
    optimizer = stepped("adam").optimizer
    group = optimizer.param_groups[0]
    first_moment = optimizer.state[group["params"][0]]["exp_avg"].clone()
    set_momentum_coefficient(optimizer, group, 0.8, rescale_buffers=True)
    assert group["betas"] == (0.8, 0.999)
    assert torch.equal(first_moment, optimizer.state[group["params"][0]]["exp_avg"])


def test_a_piecewise_momentum_schedule_is_applied_by_epoch(tmp_path):
    cfg = compose_config(
        *FAST,
        "trainer.epochs=3",
        "momentum.schedule=piecewise",
        "momentum.milestones={0:0.5,2:0.9}",
    )
    train(cfg, tmp_path)
    logged = dict(scalars(tmp_path, "momentum/decay"))
    assert [logged[s] for s in (0, 7, 8, 15)] == pytest.approx([0.5, 0.5, 0.5, 0.5])
    assert [logged[s] for s in (16, 23)] == pytest.approx([0.9, 0.9])


def test_a_cyclic_momentum_moves_against_any_lr_schedule():
    cfg = compose_config(
        *FAST, "trainer.epochs=3", "scheduler=warmup_cosine", "momentum.schedule=cyclic"
    )
    curve = schedule_curve(cfg)
    lrs, momenta = curve.lrs["decay"], curve.momenta["decay"]
    low, high = min(lrs), max(lrs)
    for lr, m in zip(lrs, momenta, strict=True):
        assert m == pytest.approx(0.95 - 0.1 * (lr - low) / (high - low))
    assert momenta[lrs.index(high)] == pytest.approx(0.85) and momenta[-1] == pytest.approx(0.95)


def test_momentum_buffers_are_reset_and_scaled_as_epochs_start():
    optimizer = stepped("momentum").optimizer
    cfg = OmegaConf.merge(
        compose_config(*FAST).momentum, {"reset_at_epochs": [3], "scale_at_epochs": {2: 0.25}}
    )
    control = MomentumControl(cfg, steps_per_epoch=8, lr_range=(0.0, 1.0))
    norm = momentum_norms(optimizer)["decay"].item()
    start_epoch(optimizer, control, 1)
    assert momentum_norms(optimizer)["decay"].item() == norm
    start_epoch(optimizer, control, 2)
    assert momentum_norms(optimizer)["decay"].item() == pytest.approx(norm / 4)
    start_epoch(optimizer, control, 3)
    assert momentum_norms(optimizer)["decay"].item() == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["scheduler=onecycle", "momentum.schedule=cyclic"], "already cycles momentum"),
        (
            ["optimizer=adagrad", "momentum.schedule=piecewise", "momentum.milestones={0:0.9}"],
            "needs an optimizer with momentum",
        ),
        (["momentum.schedule=piecewise", "momentum.milestones={3:0.9}"], "from epoch 0"),
        (["momentum.schedule=cyclic", "momentum.low=1.2"], "momentum.low must be in [0, 1)"),
        (["momentum.schedule=wave"], "momentum.schedule must be one of"),
    ],
)
def test_bad_momentum_settings_are_user_errors(overrides, message):
    with pytest.raises(
        UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    ):
        check_train_config(compose_config(*FAST, *overrides))


class RecordingWriter:
    def __init__(self):
        self.values = {}

    def add_scalar(self, tag, value, step):
        self.values[(tag, step)] = value


def test_diagnostics_measure_weight_norms_and_update_ratios():
    optimizer = stepped("momentum").optimizer
    writer = RecordingWriter()
    diagnostics = StepDiagnostics(optimizer, writer, interval=5)
    assert [diagnostics.due(s) for s in (0, 3, 5, 10)] == [True, False, True, True]
    before = diagnostics.capture()
    params = optimizer.param_groups[0]["params"]
    with torch.no_grad():
        for p in params:
            p.mul_(1.01)  # an update of exactly 1% of every weight
    diagnostics.write(5, before)
    weight = torch.linalg.vector_norm(torch.stack([p.norm() for p in before[0]])).item()
    assert writer.values[("weight_norm/decay", 5)] == pytest.approx(weight)
    assert writer.values[("update_ratio/decay", 5)] == pytest.approx(0.01, rel=1e-4)
    assert writer.values[("update_ratio/no_decay", 5)] == 0
    assert writer.values[("momentum_norm/decay", 5)] > 0


def test_the_trainer_logs_diagnostics_every_n_steps(tmp_path):
    train(compose_config(*FAST, "trainer.epochs=2", "trainer.diagnostics_interval=5"), tmp_path)
    assert [s for s, _ in scalars(tmp_path, "update_ratio/decay")] == [0, 5, 10, 15]
    # Measured after each sampled step, so step 0 already has buffers.
    assert [s for s, _ in scalars(tmp_path, "momentum_norm/decay")] == [0, 5, 10, 15]
