"""airbench94's lookahead (trainer.lookahead): the rule against airbench's own loop, exact resume."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from optbench.errors import UserError
from optbench.run.lookahead import Lookahead
from optbench.run.step import TrainStep
from optbench.train import checkpoint
from optbench.train.trainer import train


class Weights(nn.Module):
    """A parameter, a float buffer and an integer buffer (which the rule must leave alone)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))
        self.register_buffer("running", torch.zeros(2))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))


def settings(every: int = 5, decay: float = 0.95, power: float = 3):
    return OmegaConf.create({"every": every, "decay": decay, "power": power})


def test_the_rule_is_airbench94s_loop_step_for_step():
    total, model = 23, Weights()
    lookahead = Lookahead(model, settings(), total)
    # airbench94.py, written out: the EMA starts at the initial weights; after step s,
    # every 5 steps ema.lerp_(w, 1 - d(s)); w.copy_(ema); at the end once more with d = 1.
    alpha = 0.95**5 * (torch.arange(total + 1, dtype=torch.float64) / total) ** 3
    ema, w = 0.0, 0.0
    for s in range(1, total + 1):
        trained = w + float(s) ** 0.5  # what "training" made of the weights this step
        with torch.no_grad():
            model.w.fill_(trained)
            model.running.fill_(-trained)
            model.count.fill_(s)
        lookahead.after_step(s)
        w = trained
        if s % 5 == 0:
            ema += (1 - float(alpha[s])) * (w - ema)
            w = ema
        if s == total:
            w = ema
        assert model.w.tolist() == pytest.approx([w] * 3, rel=1e-6), s
        assert model.running.tolist() == pytest.approx([-w] * 2, rel=1e-6), s
        assert model.count.item() == s  # integer state is not averaged
    assert lookahead.decay_at(total) == pytest.approx(0.95**5)


def test_off_it_keeps_no_copy_and_changes_nothing():
    model = Weights()
    lookahead = Lookahead(model, settings(every=0), 10)
    with torch.no_grad():
        model.w.fill_(2.0)
    for s in range(1, 11):
        lookahead.after_step(s)
    assert lookahead.ema == [] and model.w.tolist() == [2.0] * 3


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [("every", -1, "every"), ("every", 1.5, "every"), ("decay", 1.5, "decay"),
     ("power", -1, "power")],
)  # fmt: skip
def test_bad_settings_are_user_errors(key, value, match):
    with pytest.raises(UserError, match=rf"trainer\.lookahead\.{match}"):
        Lookahead(Weights(), settings(**{key: value}), 10)


def test_a_run_ends_on_its_ema_and_lookahead_changes_training(fast_cfg, tmp_path):
    on = fast_cfg("trainer.epochs=2", "trainer.lookahead.every=3")
    train(on, tmp_path / "on")
    train(fast_cfg("trainer.epochs=2"), tmp_path / "off")
    payload = checkpoint.load_latest(tmp_path / "on")[1]
    floats = [v for v in payload["model"].values() if v.is_floating_point()]
    assert all(torch.equal(w, e) for w, e in zip(floats, payload["lookahead"]["ema"], strict=True))
    off = checkpoint.load_latest(tmp_path / "off")[1]["model"]
    assert any(not torch.equal(v, off[k]) for k, v in payload["model"].items())


def test_a_run_stopped_mid_epoch_resumes_to_the_uninterrupted_weights(
    fast_cfg, tmp_path, monkeypatch
):
    # 8 steps an epoch: step 13 is mid-epoch 2, between the EMA's updates after 12 and 15.
    cfg = fast_cfg("trainer.epochs=3", "trainer.lookahead.every=3", "trainer.deterministic=true",
                   "optimizer=nesterov", "optimizer.lr=0.05")  # fmt: skip
    train(cfg, tmp_path / "whole")
    original = TrainStep.__call__

    def interrupt_at_step_13(self, micro_batches, step=0):
        if step == 13:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, micro_batches, step)

    monkeypatch.setattr(TrainStep, "__call__", interrupt_at_step_13)
    with pytest.raises(SystemExit):
        train(cfg, tmp_path / "cut")
    monkeypatch.setattr(TrainStep, "__call__", original)
    cut = checkpoint.load_latest(tmp_path / "cut")[1]
    assert cut["state"]["step"] == 14 and cut["state"]["batch"] == 6
    results = train(OmegaConf.merge(cfg, {"trainer": {"resume": str(tmp_path / "cut")}}), tmp_path)
    assert results["status"] == "completed"
    whole = checkpoint.load_latest(tmp_path / "whole")[1]
    resumed = checkpoint.load_latest(tmp_path / "cut")[1]
    assert all(torch.equal(whole["model"][k], resumed["model"][k]) for k in whole["model"])
    assert all(
        torch.equal(a, b)
        for a, b in zip(whole["lookahead"]["ema"], resumed["lookahead"]["ema"], strict=True)
    )
