"""Every schedule against torch's own scheduler or its closed form, warm-up, and the preview."""

from __future__ import annotations

import csv
import math
import subprocess

import pytest
import torch
from helpers import compose_config, scalars
from omegaconf import OmegaConf
from torch.optim import lr_scheduler as torch_schedulers

from optbench.commands.schedule import scheduler_config
from optbench.errors import UserError
from optbench.run.schedule_curve import schedule_curve
from optbench.schedules import SCHEDULERS, build_schedule
from optbench.train.trainer import train

TOTAL, PER_EPOCH = 120, 10
BASE_LRS = (0.1, 0.02)  # two parameter groups: each must be scaled by the schedule on its own


def optimizer(momentum: float = 0.9) -> torch.optim.SGD:
    groups = [{"params": [torch.zeros(2, requires_grad=True)], "lr": lr} for lr in BASE_LRS]
    return torch.optim.SGD(groups, lr=BASE_LRS[0], momentum=momentum)


MODES = {"val_loss": "min", "val_acc": "max"}


def factor_schedule(name: str, total: int = TOTAL, **overrides):
    cfg = OmegaConf.merge(scheduler_config(name), overrides)
    schedule = build_schedule(
        cfg, steps_per_epoch=PER_EPOCH, total_steps=total, metric_modes=MODES, cycles_momentum=True
    )
    return cfg, schedule


def ours(name: str, metrics: list[float] | None = None, **overrides) -> list[list[float]]:
    """LRs of each group at every optimizer step under optbench's schedule `name`: base LR (the
    peak where the schedule has one) x each group's scale x the schedule's factor of the step."""
    cfg, schedule = factor_schedule(name, **overrides)
    base = cfg.get("max_lr") or BASE_LRS[0]
    scales = [lr / BASE_LRS[0] for lr in BASE_LRS]
    values = []
    for i in range(TOTAL):
        values.append([base * scale * schedule.lr_factor(i) for scale in scales])
        if metrics is not None and (i + 1) % PER_EPOCH == 0:
            schedule.evaluated({"val_loss": metrics[(i + 1) // PER_EPOCH - 1]}, i + 1)
    return values


def their_momenta(make) -> list[float]:
    opt = optimizer()
    scheduler = make(opt)
    values = []
    for _ in range(TOTAL):
        values.append(opt.param_groups[0]["momentum"])
        opt.step()
        scheduler.step()
    return values


def _walk(opt, step) -> list[list[float]]:
    values = []
    for _ in range(TOTAL):
        values.append([g["lr"] for g in opt.param_groups])
        step()
    return values


def theirs(make) -> list[list[float]]:
    """The same walk under a torch scheduler built by `make(optimizer)` (one per group where needed)."""
    opt = optimizer()
    scheduler = make(opt)
    return _walk(opt, scheduler.step)


def per_group(make_for_group) -> list[list[float]]:
    """Torch schedulers that take one absolute eta_min: run one single-group optimizer per group."""
    columns = []
    for lr in BASE_LRS:
        opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=lr)
        scheduler = make_for_group(opt, lr)
        column = []
        for _ in range(TOTAL):
            column.append(opt.param_groups[0]["lr"])
            scheduler.step()
        columns.append(column)
    return [list(row) for row in zip(*columns, strict=True)]


def assert_same(a, b):
    assert len(a) == len(b) == TOTAL
    for step, (x, y) in enumerate(zip(a, b, strict=True)):
        assert x == pytest.approx(y, rel=1e-9, abs=1e-12), f"step {step}: {x} != {y}"


def test_every_scheduler_is_covered_here():
    assert set(SCHEDULERS) == {
        "constant",
        "step",
        "multistep",
        "exponential",
        "cosine",
        "cosine_restarts",
        "onecycle",
        "warmup_cosine",
        "warmup_linear",
        "polynomial",
        "plateau",
        "cyclic",
        "custom",
    }  # fmt: skip (custom: tests/test_user_code.py)


def test_constant():
    assert_same(ours("constant"), [list(BASE_LRS)] * TOTAL)


def test_step_converts_epochs_and_shares_of_training():
    assert_same(
        ours("step", step_size=3), theirs(lambda o: torch_schedulers.StepLR(o, 3 * PER_EPOCH, 0.1))
    )
    assert_same(
        ours("step", step_size="25%"), theirs(lambda o: torch_schedulers.StepLR(o, 30, 0.1))
    )


def test_multistep():
    expected = theirs(lambda o: torch_schedulers.MultiStepLR(o, [60, 90], 0.1))
    assert_same(ours("multistep"), expected)  # the default milestones: 50% and 75%
    assert_same(ours("multistep", milestones=[6, 9]), expected)  # the same in epochs


def test_exponential_spreads_its_per_epoch_gamma_over_the_steps():
    assert_same(
        ours("exponential"),
        theirs(lambda o: torch_schedulers.ExponentialLR(o, 0.9 ** (1 / PER_EPOCH))),
    )
    assert ours("exponential")[PER_EPOCH][0] == pytest.approx(0.1 * 0.9, rel=1e-12)


@pytest.mark.parametrize("floor", [0.0, 0.1])
def test_cosine_is_torch_cosine_annealing_with_a_per_group_floor(floor):
    expected = per_group(
        lambda o, lr: torch_schedulers.CosineAnnealingLR(o, T_max=TOTAL - 1, eta_min=floor * lr)
    )
    assert_same(ours("cosine", min_lr_ratio=floor), expected)


@pytest.mark.parametrize(("t0", "mult"), [("25%", 1), (2, 2)])
def test_cosine_restarts_is_torch_sgdr(t0, mult):
    period = 30 if t0 == "25%" else 2 * PER_EPOCH
    expected = per_group(
        lambda o, lr: torch_schedulers.CosineAnnealingWarmRestarts(
            o, period, mult, eta_min=0.05 * lr
        )
    )
    assert_same(ours("cosine_restarts", T_0=t0, T_mult=mult, min_lr_ratio=0.05), expected)


def test_onecycle_with_per_group_peaks():
    expected = theirs(
        lambda o: torch_schedulers.OneCycleLR(o, max_lr=list(BASE_LRS), total_steps=TOTAL)
    )
    assert_same(ours("onecycle"), expected)
    scaled = theirs(lambda o: torch_schedulers.OneCycleLR(o, max_lr=[0.5, 0.1], total_steps=TOTAL))
    assert_same(
        ours("onecycle", max_lr=0.5), scaled
    )  # max_lr scales every group's LR in proportion


@pytest.mark.parametrize(
    "settings",
    [{"three_phase": True}, {"anneal_strategy": "linear"}, {"pct_start": 0.1, "div_factor": 10.0}],
)
def test_onecycle_variants_and_its_momentum_are_torchs(settings):
    def make(o):
        return torch_schedulers.OneCycleLR(o, max_lr=list(BASE_LRS), total_steps=TOTAL, **settings)

    assert_same(ours("onecycle", **settings), theirs(make))
    _, schedule = factor_schedule("onecycle", **settings)
    expected = their_momenta(make)
    assert [schedule.momentum(t) for t in range(TOTAL)] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("mode", "gamma"), [("triangular2", 1.0), ("exp_range", 0.99)])
def test_cyclic_modes_and_its_momentum_are_torchs(mode, gamma):
    def make(o):
        return torch_schedulers.CyclicLR(
            o, base_lr=[0.025, 0.005], max_lr=list(BASE_LRS), step_size_up=15, mode=mode,
            gamma=gamma, base_momentum=0.8, max_momentum=0.9,
        )  # fmt: skip

    assert_same(ours("cyclic", mode=mode, gamma=gamma), theirs(make))
    _, schedule = factor_schedule("cyclic", mode=mode, gamma=gamma)
    expected = their_momenta(make)
    assert [schedule.momentum(t) for t in range(TOTAL)] == pytest.approx(expected, rel=1e-12)


def test_the_lr_is_a_pure_function_of_the_step():
    _, schedule = factor_schedule("warmup_cosine")
    forward = [schedule.lr_factor(t) for t in range(TOTAL)]
    assert [schedule.lr_factor(t) for t in reversed(range(TOTAL))] == forward[::-1]
    assert schedule.lr_range() == (min(forward), max(forward)) == (0.0, 1.0)


def test_warmup_cosine_closed_form():
    warmup, values = 6, ours("warmup_cosine")  # 5% of 120 steps
    for step, row in enumerate(values):
        for lr, base in zip(row, BASE_LRS, strict=True):
            if step <= warmup:
                expected = base * step / warmup
            else:
                expected = (
                    base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (TOTAL - 1 - warmup)))
                )
            assert lr == pytest.approx(expected, rel=1e-9, abs=1e-15), step


def test_warmup_linear_closed_form():
    warmup = round(0.06 * TOTAL)
    for step, row in enumerate(ours("warmup_linear")):
        fraction = step / warmup if step <= warmup else 1 - (step - warmup) / (TOTAL - 1 - warmup)
        assert row == pytest.approx([b * fraction for b in BASE_LRS], rel=1e-9, abs=1e-15), step


def test_polynomial():
    assert_same(
        ours("polynomial"), theirs(lambda o: torch_schedulers.PolynomialLR(o, TOTAL - 1, power=0.9))
    )


def test_cyclic():
    def cyclic(o):
        return torch_schedulers.CyclicLR(
            o,
            base_lr=[0.025, 0.005],
            max_lr=list(BASE_LRS),
            step_size_up=15,
            base_momentum=0.8,
            max_momentum=0.9,
        )

    assert_same(ours("cyclic"), theirs(cyclic))


def test_plateau_steps_on_the_validation_metric_after_each_evaluation():
    losses = [1.0, 0.9, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]
    opt = optimizer()
    reference = torch_schedulers.ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=2, threshold=1e-4,
                                                  min_lr=[0.0, 0.0])  # fmt: skip
    expected = []
    for i in range(TOTAL):
        expected.append([g["lr"] for g in opt.param_groups])
        if (i + 1) % PER_EPOCH == 0:
            reference.step(losses[(i + 1) // PER_EPOCH - 1])
    got = ours("plateau", metrics=losses)
    assert_same(got, expected)
    assert got[-1][0] < got[0][0]  # it did reduce


def plan_cfg(*overrides):
    return compose_config(
        "dataset=synthetic", "dataset.train_size=500", "model=mlp", "model.hidden=[8]", "trainer.batch_size=64",
        "trainer.epochs=3", "trainer.device=cpu", *overrides,
    )  # fmt: skip


@pytest.mark.parametrize(
    "name", sorted(set(SCHEDULERS) - {"plateau", "cyclic", "cosine_restarts", "constant"})
)
@pytest.mark.parametrize("accumulation", [1, 3])
def test_warmup_ends_at_the_base_lr_and_the_schedule_ends_on_the_last_step(name, accumulation):
    # 500 images in batches of 64: 8 batches, the last one short; 3 epochs.
    # A user's function by import path: step / total_steps, a ramp.
    target = ["scheduler.target=operator.truediv"] if name == "custom" else []
    cfg = plan_cfg(
        f"scheduler={name}", "scheduler.warmup=5", f"trainer.accumulation={accumulation}", *target
    )
    curve = schedule_curve(cfg)
    lrs = curve.lrs["decay"]
    assert len(lrs) == 3 * math.ceil(8 / accumulation)
    no_warmup = schedule_curve(plan_cfg(f"scheduler={name}", f"trainer.accumulation={accumulation}",
                                        "scheduler.warmup=0", "trainer.epochs=3", *target))  # fmt: skip
    assert lrs[5] == no_warmup.lrs["decay"][0]  # the warm-up reaches where the schedule begins
    assert lrs[0] == 0.0  # ... from warmup_start_factor 0
    main = OmegaConf.merge(scheduler_config(name), cfg.scheduler, {"warmup": 0})
    standalone = build_schedule(
        main, steps_per_epoch=curve.steps_per_epoch, total_steps=len(lrs) - 5, metric_modes=MODES
    )
    end = 0.1 * standalone.lr_factor(len(lrs) - 6)
    assert lrs[-1] == pytest.approx(end, rel=1e-12, abs=1e-15)  # its end, on the last step


def test_the_preview_csv_matches_the_trainers_logged_lrs(tmp_path):
    overrides = ["dataset=synthetic", "dataset.train_size=300", "dataset.test_size=64", "model=mlp",
                 "model.hidden=[8]", "trainer.batch_size=64", "trainer.epochs=2", "trainer.accumulation=2",
                 "scheduler=warmup_cosine", "trainer.device=cpu", "trainer.log_interval=1"]  # fmt: skip
    out = subprocess.run(["optbench", "schedule", *overrides, f"hydra.run.dir={tmp_path / 'preview'}"],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "preview" / "schedule.png").stat().st_size > 10_000
    with open(tmp_path / "preview" / "schedule.csv") as f:
        previewed = [float(row["lr/decay"]) for row in csv.DictReader(f)]
    train(compose_config(*overrides, "trainer.progress=false"), tmp_path / "run")
    logged = [value for _, value in scalars(tmp_path / "run", "lr/decay")]
    assert logged == pytest.approx(previewed, rel=1e-6)  # TensorBoard keeps float32


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["scheduler.warmup=1000"], "leaves no room for the schedule"),
        (
            ["scheduler=cosine_restarts", "scheduler.T_0=0"],
            "T_0=0 is shorter than one optimizer step",
        ),
        (["scheduler=plateau", "scheduler.metric=val_f1"], "scheduler.metric must be one of"),
        (["scheduler=multistep", "scheduler.milestones=[5,2]"], "milestones must increase"),
        (["scheduler.warmup=1.5"], "fraction of training must be in (0, 1)"),
    ],
)
def test_bad_schedules_exit_2_with_one_line(tmp_path, overrides, message):
    out = subprocess.run(["optbench", "schedule", "dataset=synthetic", *overrides, f"paths.output_dir={tmp_path}"],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def momentum_walk(optimizer_name: str, **hyper) -> list[float]:
    cfg = plan_cfg(
        "scheduler=onecycle",
        f"optimizer={optimizer_name}",
        *(f"optimizer.{k}={v}" for k, v in hyper.items()),
    )
    curve = schedule_curve(cfg)
    return next(iter(curve.momenta.values()), [])


def test_onecycle_never_switches_momentum_on_for_plain_sgd():
    assert set(momentum_walk("sgd")) == {0.0}  # torch would cycle it between 0.85 and 0.95


def test_onecycle_runs_with_optimizers_that_keep_no_momentum():
    for name in ("adagrad", "adafactor"):  # torch's OneCycleLR raises for these
        curve = schedule_curve(plan_cfg("scheduler=onecycle", f"optimizer={name}"))
        assert curve.lrs["decay"][0] < curve.lrs["decay"][len(curve.lrs["decay"]) // 3]


def test_onecycle_cycles_adams_beta1_and_sgds_momentum():
    for values in (momentum_walk("adam"), momentum_walk("momentum")):
        assert max(values) == pytest.approx(0.95) and min(values) == pytest.approx(0.85, abs=1e-3)


def test_an_unknown_scheduler_is_a_user_error():
    with pytest.raises(UserError, match="unknown scheduler"):
        scheduler_config("triangle")
