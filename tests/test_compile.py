"""trainer.compile: the compiled model, and the compiled optimizer step, train as eager does."""

from __future__ import annotations

import logging

import pytest
import torch

from optbench.errors import UserError
from optbench.run import build_run
from optbench.run.compilation import CompiledOptimizerStep, compile_target
from optbench.train import checkpoint
from optbench.train.trainer import train

# Observed on 2 CPU cores (torch 2.14.1, inductor, 2 epochs of 8 steps): final weights within
# 7e-8 of eager, final losses within 3e-8 (Nesterov) and 6.3e-6 (AdamW, compiled step):
# inductor reorders float sums. The tolerances leave more than a decade of room.
WEIGHTS, LOSSES = 1e-6, 1e-4


def final_weights(run_dir) -> dict[str, torch.Tensor]:
    return checkpoint.load_latest(run_dir)[1]["model"]


@pytest.mark.parametrize("optimizer", ["nesterov", "adamw"])
def test_compiled_model_and_step_train_as_eager_does(fast_cfg, tmp_path, optimizer):
    # A warm-up: the LR changes every step, which must not recompile the step.
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    overrides = [f"optimizer={optimizer}", "scheduler=warmup_cosine", "trainer.epochs=2"]
    eager = train(fast_cfg(*overrides), tmp_path / "eager")
    for target in ("model", "step"):
        run = train(fast_cfg(*overrides, f"trainer.compile={target}"), tmp_path / target)
        for key in ("final_train_loss", "final_test_loss"):
            assert run[key] == pytest.approx(eager[key], abs=LOSSES), (target, key)
        ours, theirs = final_weights(tmp_path / target), final_weights(tmp_path / "eager")
        for name, tensor in theirs.items():
            assert torch.allclose(ours[name], tensor, atol=WEIGHTS, rtol=0), (target, name)
    # Model: train and eval graphs; step: its first call (which makes the state) and the rest.
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] <= 6


def test_step_compiles_a_torch_optimizer_and_falls_back_for_others(fast_cfg, caplog):
    run = build_run(fast_cfg("trainer.compile=step", "optimizer=adamw"))
    assert isinstance(run.optimizer.step, CompiledOptimizerStep)
    assert all(
        g["foreach"] and g["capturable"] and not g["fused"] for g in run.optimizer.param_groups
    )
    with caplog.at_level(logging.WARNING, logger="optbench"):
        lion = build_run(fast_cfg("trainer.compile=step", "optimizer=lion"))
    assert not isinstance(lion.optimizer.step, CompiledOptimizerStep)
    assert "not a torch.optim optimizer" in caplog.text


def test_compile_settings_are_checked_before_anything_runs(fast_cfg):
    assert compile_target(True) == "model" and compile_target(False) == "false"
    with pytest.raises(UserError, match=r"trainer\.compile must be"):
        build_run(fast_cfg("trainer.compile=graph"), meta=True)
    with pytest.raises(UserError, match=r"trainer\.compile_mode must be"):
        build_run(fast_cfg("trainer.compile=model", "trainer.compile_mode=fast"), meta=True)
    with pytest.raises(UserError, match="every new momentum value"):
        build_run(fast_cfg("trainer.compile=step", "scheduler=onecycle"), meta=True)
