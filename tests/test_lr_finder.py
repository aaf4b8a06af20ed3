"""The LR range test: known answers, stable suggestions, exact restore, and use in training."""

from __future__ import annotations

import csv
import json
import math
import subprocess

import numpy as np
import pytest
import torch
from conftest import FAST
from helpers import compose_config, scalars
from omegaconf import OmegaConf

from optbench.errors import UserError
from optbench.lr_finder.finder import find_lr
from optbench.lr_finder.outputs import plot
from optbench.lr_finder.range_test import (
    DIVERGED,
    END_OF_RANGE,
    NON_FINITE,
    RangeTestSettings,
    run_range_test,
)
from optbench.lr_finder.suggestions import RULES, suggest, usable_points
from optbench.run import build_run
from optbench.run.step import NonFiniteStep, TrainStep
from optbench.train import checkpoint
from optbench.train.trainer import train

DEFAULTS = RangeTestSettings()


def least_squares_test(seed: int) -> tuple[float, object, dict]:
    """Minibatch SGD on linear least squares: it diverges once lr > 2 / lambda_max(H)."""
    g = torch.Generator().manual_seed(seed)
    n, d = 256, 20
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.logspace(
        0, 1, d, dtype=torch.float64
    )
    y = x @ torch.randn(d, generator=g, dtype=torch.float64) + 0.1 * torch.randn(
        n, generator=g, dtype=torch.float64
    )
    critical = 2 / torch.linalg.eigvalsh(2 * x.T @ x / n).max().item()  # H of mean((xw - y)^2)
    w = torch.zeros(d, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([w], lr=1.0)

    def set_lr(lr: float) -> None:
        optimizer.param_groups[0]["lr"] = lr

    def take_step() -> float:
        rows = torch.randint(n, (32,), generator=g)
        optimizer.zero_grad()
        loss = ((x[rows] @ w - y[rows]) ** 2).mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    settings = RangeTestSettings(start_lr=critical * 1e-4, end_lr=critical * 1e2, num_iter=100)
    curve = run_range_test(take_step, set_lr, settings)
    return critical, curve, suggest(curve, settings.smoothing)


@pytest.mark.parametrize("seed", range(3))
def test_least_squares_divergence_is_found_near_two_over_lambda_max(seed):
    critical, curve, suggestions = least_squares_test(seed)
    assert curve.stop_reason in (DIVERGED, NON_FINITE)
    assert critical / 2 <= curve.diverged_lr <= 2 * critical
    for rule in RULES:
        assert suggestions[rule].lr < critical, rule


def no_spike(x: float) -> float:
    return 0.0


def synthetic_curve(
    seed: int,
    noise: float = 0.05,
    flat: bool = False,
    offset: float = 0.0,
    settings=DEFAULTS,
    spike=no_spike,
):
    """A loss that falls fastest at lr 1e-3 (a sigmoid in log10 lr) and explodes past 0.1,
    plus `spike(log10 lr)`."""
    rng = np.random.default_rng(seed)
    lr_now = {}

    def take_step() -> float:
        x = math.log10(lr_now["lr"])
        loss = (
            1.0
            if flat
            else 2.0 - 1.5 / (1 + math.exp(-(x + 3) / 0.35)) + max(0.0, math.exp(4 * (x + 1)) - 1)
        )
        return (loss + spike(x)) * (1 + noise * rng.standard_normal()) + offset

    curve = run_range_test(take_step, lambda lr: lr_now.update(lr=lr), settings)
    return curve, suggest(curve, settings.smoothing)


def test_suggestions_are_stable_across_noise_seeds():
    runs = [synthetic_curve(seed)[1] for seed in range(12)]
    for rule in RULES:
        lrs = np.array([r[rule].lr for r in runs])
        median = np.median(lrs)
        assert np.all(lrs <= 2 * median) and np.all(lrs >= median / 2), (rule, lrs)
    steepest = np.median([r["steepest"].lr for r in runs])
    assert 1e-3 / 2 <= steepest <= 1e-3 * 2  # the known steepest point


def test_offset_and_negative_losses_give_the_same_answers():
    plain, plain_suggestions = synthetic_curve(0)
    shifted, shifted_suggestions = synthetic_curve(0, offset=-100.0)  # every loss is negative
    assert shifted.stop_reason == plain.stop_reason == DIVERGED
    assert shifted.diverged_at == plain.diverged_at
    for rule in RULES:
        assert shifted_suggestions[rule].lr == pytest.approx(plain_suggestions[rule].lr, rel=1e-6)


def spike_then_partial_recovery(x: float) -> float:
    """Right after the bottom (0.5) a spike to 5.5, then back to only 2.2, above the start."""
    return 5.0 if -1.65 <= x < -1.45 else 1.7 if x >= -1.45 else 0.0


def spike_then_full_recovery(x: float) -> float:
    return 5.0 if -1.75 <= x < -1.6 else 0.0


@pytest.mark.parametrize("seed", range(4))
def test_a_spike_that_never_comes_back_down_is_where_the_divergence_begins(seed):
    curve, suggestions = synthetic_curve(seed, spike=spike_then_partial_recovery)
    spike_starts = next(i for i, lr in enumerate(curve.lrs) if math.log10(lr) >= -1.65)
    assert curve.stop_reason == DIVERGED and curve.lrs[-1] > 0.1  # it stops long after the spike
    # The onset is at the bottom just before the spike (noise there may move it a few points).
    assert spike_starts - 4 <= curve.diverged_at < spike_starts
    assert 1e-3 / 1.25 <= suggestions["steepest"].lr <= 1e-3 * 1.25  # the known steepest point
    assert all(s.lr < curve.diverged_lr for s in suggestions.values())


@pytest.mark.parametrize("seed", range(4))
def test_a_spike_the_loss_recovers_from_moves_neither_onset_nor_suggestions(seed):
    plain, plain_suggestions = synthetic_curve(seed)
    spiky, spiky_suggestions = synthetic_curve(seed, spike=spike_then_full_recovery)
    assert abs(spiky.diverged_at - plain.diverged_at) <= 1
    assert 1e-3 / 1.25 <= spiky_suggestions["steepest"].lr <= 1e-3 * 1.25
    for rule in RULES:
        assert spiky_suggestions[rule].lr == pytest.approx(plain_suggestions[rule].lr, rel=0.5)


@pytest.mark.parametrize("batch_size", [64, 128])
def test_a_real_curve_with_a_spike_before_divergence_gets_the_steepest_fall(batch_size):
    """Momentum SGD on the MLP: the raw loss falls 2.31 -> 1.9 by lr 0.2, then spikes to 6-9
    at lr 0.29-0.42 and partly recovers before the test stops; torch-lr-finder suggests
    0.167 on this setup."""
    cfg = compose_config(
        "dataset=synthetic", "model=mlp", "optimizer=momentum", f"trainer.batch_size={batch_size}",
        "trainer.device=cpu", "trainer.progress=false",
    )  # fmt: skip
    result = find_lr(build_run(cfg), cfg.lr_find)
    curve, losses = result.curve, np.array(result.curve.losses)
    assert curve.stop_reason == DIVERGED and losses.max() > 3 * losses[0]  # the spike
    usable = losses[: usable_points(curve)]
    assert usable.min() == losses.min() and usable.max() < 1.05 * losses[0]  # no spike in it
    assert 0.167 / 1.5 <= result.suggestions["steepest"].lr <= 0.167 * 1.5
    assert all(s.lr is not None and s.lr < curve.diverged_lr for s in result.suggestions.values())
    low, high = plot(result, "spiky").axes[0].get_ylim()
    assert low < usable.min() and high > usable.max()  # the whole raw curve up to the climb


def test_a_flat_curve_gets_no_suggestion_and_a_reason():
    curve, suggestions = synthetic_curve(0, flat=True)
    assert curve.stop_reason == END_OF_RANGE
    for s in suggestions.values():
        assert s.lr is None and "flat" in s.reason


def test_divergence_from_the_first_step_gets_no_suggestion():
    lr_now = {}
    curve = run_range_test(
        lambda: 1.0 + 1e3 * lr_now["lr"],
        lambda lr: lr_now.update(lr=lr),
        RangeTestSettings(1e-3, 10),
    )
    assert curve.stop_reason == DIVERGED
    assert all(s.lr is None for s in suggest(curve, DEFAULTS.smoothing).values())


def test_a_nan_stops_the_test_at_once_with_its_reason():
    calls = []

    def take_step() -> float:
        calls.append(1)
        if len(calls) == 30:
            raise NonFiniteStep(math.nan, ["w"])
        return 1.0

    curve = run_range_test(take_step, lambda lr: None, DEFAULTS)
    assert (
        curve.stop_reason == NON_FINITE and len(curve.losses) == 30 and math.isnan(curve.losses[-1])
    )
    reasons = {s.reason for s in suggest(curve, DEFAULTS.smoothing).values()}
    assert len(reasons) == 1 and "never fell" in reasons.pop()  # a constant loss, then NaN


def test_the_ladder_includes_both_ends_evenly_spaced(fast_cfg):
    lrs = run_range_test(lambda: 1.0, lambda lr: None, RangeTestSettings(1e-6, 1.0, num_iter=7)).lrs
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1.0)
    assert np.allclose(np.diff(np.log10(lrs)), 1.0)
    linear = run_range_test(
        lambda: 1.0, lambda lr: None, RangeTestSettings(0.1, 0.5, num_iter=5, mode="linear")
    ).lrs
    assert np.allclose(linear, [0.1, 0.2, 0.3, 0.4, 0.5])


def state_of(setup) -> tuple[dict, dict, torch.Tensor]:
    model = {k: v.clone() for k, v in setup.model.state_dict().items()}
    optimizer = setup.optimizer.state_dict()
    optimizer = {
        "state": {
            k: {n: t.clone() if torch.is_tensor(t) else t for n, t in v.items()}
            for k, v in optimizer["state"].items()
        },
        "param_groups": [dict(g) for g in optimizer["param_groups"]],
    }
    return model, optimizer, torch.get_rng_state()


def test_the_test_restores_model_optimizer_and_rng_bit_for_bit():
    not_model = [o for o in FAST if not o.startswith("model")]
    cfg = compose_config(
        *not_model,
        "model=fastcnn",
        "model.widths=[4,8,8]",
        "optimizer=adamw",
        "trainer.accumulation=2",
    )
    setup = build_run(cfg)
    batches = setup.data.train_batches.epoch(0)
    for i in range(2):  # give the optimizer state and the batch norms statistics to lose
        setup.step([next(batches), next(batches)], i)
    before = state_of(setup)
    lr_find = OmegaConf.merge(cfg.lr_find, {"num_iter": 20})
    find_lr(setup, lr_find)
    after = state_of(setup)
    for name, tensor in before[0].items():
        assert torch.equal(tensor, after[0][name]), name
    assert before[1]["param_groups"] == after[1]["param_groups"]
    for key, entry in before[1]["state"].items():
        for name, value in entry.items():
            assert torch.equal(
                torch.as_tensor(value), torch.as_tensor(after[1]["state"][key][name])
            ), (key, name)
    assert torch.equal(before[2], after[2])


def test_the_ramp_moves_every_group_in_proportion_per_optimizer_step(fast_cfg, monkeypatch):
    cfg = fast_cfg(
        "optimizer=momentum", "trainer.accumulation=3", "param_groups.lr_multipliers={3:10.0}"
    )
    setup = build_run(cfg)
    seen = []
    original = TrainStep.__call__

    def spy(self, micro_batches, index):
        seen.append((len(micro_batches), [g["lr"] for g in self.optimizer.param_groups]))
        return original(self, micro_batches, index)

    monkeypatch.setattr(TrainStep, "__call__", spy)
    settings = OmegaConf.merge(cfg.lr_find, {"num_iter": 12, "batches_per_step": 2})
    result = find_lr(setup, settings)
    points = len(result.curve.lrs)
    assert len(seen) == 2 * points and all(
        n == 3 for n, _ in seen
    )  # optimizer steps, not micro-batches
    names = [g["name"] for g in setup.optimizer.param_groups]
    for (_, lrs), point_lr in zip(seen[::2], result.curve.lrs, strict=False):
        by_name = dict(zip(names, lrs, strict=True))
        assert by_name["decay"] == pytest.approx(point_lr)
        assert by_name["3/decay"] == pytest.approx(10 * point_lr)


def test_several_seeds_give_a_median_curve_inside_its_band(fast_cfg):
    cfg = fast_cfg()
    setup = build_run(cfg)
    result = find_lr(setup, OmegaConf.merge(cfg.lr_find, {"num_iter": 25, "seeds": 3}))
    low, high = result.band
    assert len(result.seed_curves) == 3
    assert all(lo <= m <= hi for lo, m, hi in zip(low, result.curve.losses, high, strict=True))
    assert result.seed_curves[0].losses != result.seed_curves[1].losses  # different data orders


def test_max_lr_auto_feeds_the_found_lr_into_onecycle(fast_cfg, tmp_path):
    cfg = fast_cfg(
        "scheduler=onecycle", "scheduler.max_lr=auto", "trainer.epochs=2", "lr_find.num_iter=40"
    )
    results = train(cfg, tmp_path)
    found = results["lr_finder"]
    assert found["applied_to"] == ["scheduler.max_lr"] and found["rule"] == "valley"
    # The logged schedule is torch's own OneCycleLR with the found LR as max_lr, at every step.
    logged = [value for _, value in scalars(tmp_path, "lr/decay")]
    reference = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=found["lr"], momentum=0.9)
    onecycle = torch.optim.lr_scheduler.OneCycleLR(
        reference, max_lr=found["lr"], total_steps=len(logged)
    )
    expected = []
    for _ in logged:
        expected.append(reference.param_groups[0]["lr"])
        reference.step()
        onecycle.step()
    assert logged == pytest.approx(expected, rel=1e-6)  # TensorBoard stores float32
    assert (tmp_path / "lr_find" / "lr_find.png").stat().st_size > 0


def test_lr_auto_trains_exactly_like_the_found_lr_written_out(fast_cfg, tmp_path):
    auto = train(
        fast_cfg("optimizer.lr=auto", "trainer.epochs=1", "lr_find.num_iter=40"), tmp_path / "auto"
    )
    lr = auto["lr_finder"]["lr"]
    explicit = train(fast_cfg(f"optimizer.lr={lr!r}", "trainer.epochs=1"), tmp_path / "explicit")
    assert auto["final_train_loss"] == explicit["final_train_loss"]
    assert auto["final_test_loss"] == explicit["final_test_loss"]


def test_bad_finder_settings_are_user_errors(fast_cfg):
    from optbench.train.preflight import check_train_config

    for override, message in [
        ("lr_find.start_lr=10", "start_lr < end_lr"),
        ("lr_find.rule=best", "lr_find.rule must be one of"),
        ("lr_find.seeds=0", "lr_find.seeds must be an integer >= 1"),
        ("lr_find.mode=cubic", "lr_find.mode must be exp or linear"),
    ]:
        with pytest.raises(UserError, match=message):
            check_train_config(fast_cfg("optimizer.lr=auto", override))


FAST_CLI = ["dataset=synthetic", "dataset.train_size=256", "dataset.test_size=128", "dataset.separation=0.4",
            "model=mlp", "model.hidden=[32]", "trainer.batch_size=32", "trainer.device=cpu", "lr_find.num_iter=30"]  # fmt: skip


def test_cli_writes_the_documented_outputs_and_a_sweep_comparison(tmp_path):
    out = subprocess.run(
        ["optbench", "lr-find", "-m", *FAST_CLI, "optimizer=sgd,adam", f"paths.output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (sweep,) = (tmp_path / "multirun" / "lr_find").glob("*/*")
    tests = sorted(sweep.glob("*/lr_find.json"))
    assert len(tests) == 2
    summary = json.loads(tests[0].read_text())
    assert set(summary["suggestions"]) == set(RULES) and summary["rule"] == "valley"
    assert {"lr", "reason", "stop_reason", "diverged_at_lr", "points", "settings"} <= summary.keys()
    with open(tests[0].parent / "lr_find.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:4] == ["step", "lr", "loss", "smoothed_loss"]
    assert len(rows) == summary["points"]
    assert (tests[0].parent / "lr_find.png").stat().st_size > 10_000
    assert (sweep / "lr_compare.png").stat().st_size > 10_000  # the sweep's overlay
    again = subprocess.run(
        ["optbench", "lr-compare", str(sweep), "--out", str(tmp_path / "cmp")],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr
    with open(tmp_path / "cmp" / "lr_compare.csv") as f:
        assert len(list(csv.DictReader(f))) == 2


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    out = subprocess.run(
        ["optbench", "lr-find", *FAST_CLI, "lr_find.end_lr=1e-9", f"paths.output_dir={tmp_path}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "start_lr < end_lr" in out.stderr and not any(tmp_path.iterdir())


def test_resuming_an_auto_lr_run_reuses_the_lr_it_found(fast_cfg, tmp_path):
    overrides = [
        "optimizer.lr=auto",
        "trainer.epochs=2",
        "lr_find.num_iter=40",
        "trainer.keep_checkpoints=2",
    ]
    first = train(fast_cfg(*overrides), tmp_path)
    found = tmp_path / "lr_find" / "lr_find.json"
    written = found.stat().st_mtime_ns
    checkpoint.list_checkpoints(tmp_path)[0].unlink()  # back to the end of epoch 1
    resumed = train(fast_cfg(*overrides, "trainer.resume=auto"), tmp_path)
    assert found.stat().st_mtime_ns == written  # no second range test
    assert resumed["lr_finder"] == first["lr_finder"]
    assert resumed["final_test_loss"] == first["final_test_loss"]
