"""Every decision reads the validation split: replacing the test split's labels with random ones
changes the reported test numbers and nothing else (best point, targets, plateau, search,
pruning, tuning, the LR finder); time to target at step resolution; no validation split, no
choosing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import optuna
import pytest
import torch
from conftest import FAST
from helpers import compose_config, read_jsonl

from optbench.cli import main
from optbench.data import sources
from optbench.data.info import ImageSplit
from optbench.lr_finder.finder import find_lr
from optbench.run import build_run
from optbench.train import checkpoint
from optbench.train.trainer import train

QUICK = ["trainer.checkpoint_every=0", "trainer.diagnostics_interval=0"]
# Evaluated every 3 steps (8 per epoch), with targets, a plateau schedule that drops the LR
# within the run, and the weights of the best validation point kept.
CHOOSING = ["trainer.epochs=3", "trainer.eval_every=3", "trainer.targets=[0.4,0.6,0.99]",
            "scheduler=plateau", "scheduler.metric=val_acc", "scheduler.patience=0",
            "scheduler.threshold=0.05",
            "trainer.keep_best=true", "optimizer=adamw"]  # fmt: skip


@pytest.fixture
def random_test_labels(monkeypatch):
    """Synthetic data whose test labels are random: any choice that reads them would change."""
    source = sources.DATASETS["synthetic"]

    def load(cfg):
        pool, test = source.load(cfg)
        noise = torch.Generator().manual_seed(1234)
        labels = torch.randint(cfg.num_classes, test.labels.shape, generator=noise)
        return pool, ImageSplit(test.images, labels)

    def use() -> None:
        monkeypatch.setitem(sources.DATASETS, "synthetic", dataclasses.replace(source, load=load))

    return use


def decisions(results: dict) -> dict:
    """What a run chose and reached; times to target in steps and examples (seconds vary)."""
    keys = ("best_epoch", "best_step", "best_val_acc", "final_val_acc", "steps")
    reached = {target: hit and {k: v for k, v in hit.items() if k != "train_time_s"}
               for target, hit in results["time_to_target"].items()}  # fmt: skip
    return {k: results[k] for k in keys} | {"time_to_target": reached}


def without_test(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("test_") and "time" not in k
             and not k.endswith("_per_s")} for r in records]  # fmt: skip


def test_random_test_labels_change_only_the_reported_test_numbers(tmp_path, random_test_labels):
    cfg = compose_config(*FAST, *QUICK, *CHOOSING)
    honest = train(cfg, tmp_path / "honest")
    random_test_labels()
    scrambled = train(cfg, tmp_path / "scrambled")

    assert decisions(scrambled) == decisions(honest)
    assert scrambled["test_at_best"] != honest["test_at_best"]
    assert scrambled["final_test_acc"] != honest["final_test_acc"]
    assert scrambled["final_test_acc"] < 0.3  # random labels: about chance (0.1)
    # Every validation value, training loss and LR (plateau's reductions) of the curve agree.
    honest_records = read_jsonl(tmp_path / "honest" / "metrics.jsonl")
    assert without_test(read_jsonl(tmp_path / "scrambled" / "metrics.jsonl")) == without_test(
        honest_records
    )
    lrs = [r["lr"]["decay"] for r in honest_records if "lr" in r]
    assert len(set(lrs)) > 1, "the plateau schedule should have cut the LR within the run"
    hits = [h for h in honest["time_to_target"].values() if h is not None]
    assert hits and honest["time_to_target"]["0.99"] is None  # some reached, one missed
    # The kept weights are the best validation point's, the same in both runs.
    best = [checkpoint.load_checkpoint(tmp_path / run / "checkpoints" / "best.pt")
            for run in ("honest", "scrambled")]  # fmt: skip
    assert best[0]["step"] == best[1]["step"] == honest["best_step"]
    for a, b in zip(best[0]["model"].values(), best[1]["model"].values(), strict=True):
        assert torch.equal(a, b)


def test_time_to_target_has_step_resolution_and_matches_the_curve_by_hand(tmp_path):
    results = train(compose_config(*FAST, *QUICK, *CHOOSING), tmp_path)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    evaluations = [r for r in records if "val_acc" in r]
    # Every 3rd step and the last one (24): 3, 6, ..., 21, 24.
    assert [r["step"] for r in evaluations] == [*range(3, 24, 3), 24]
    for target, hit in results["time_to_target"].items():
        first = next((r for r in evaluations if r["val_acc"] >= float(target)), None)
        if first is None:
            assert hit is None
            continue
        assert hit == {k: first[k] for k in ("epoch", "step", "examples", "train_time_s")}
        assert hit["examples"] == 64 * hit["step"]  # batch 64, no step is short before the end
        assert hit["epoch"] == pytest.approx(hit["step"] / 8)
    best = max(evaluations, key=lambda r: r["val_acc"])  # the first of equals
    assert (results["best_step"], results["best_val_acc"]) == (best["step"], best["val_acc"])
    assert results["test_at_best"] == {k: best[k] for k in ("test_loss", "test_acc")}


def test_the_lr_finder_s_held_out_loss_reads_validation(random_test_labels):
    cfg = compose_config(*FAST, "lr_find.validation_batches=2", "lr_find.num_iter=30")
    honest = find_lr(build_run(cfg), cfg.lr_find)
    random_test_labels()
    scrambled = find_lr(build_run(cfg), cfg.lr_find)
    assert scrambled.curve.losses == honest.curve.losses
    assert scrambled.chosen.lr == honest.chosen.lr


def trials(sweep: Path, name: str = "search") -> list[tuple]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{sweep / 'optuna.db'}")
    return [(t.params, t.value, t.state, t.intermediate_values) for t in study.trials]


def test_search_trials_and_pruning_read_validation(tmp_path, random_test_labels):
    args = ["search", "+experiment=lr_wd_search", *FAST, *QUICK, "trainer.epochs=3",
            "trainer.eval_every=4", "search.n_trials=4", "search.sampler=qmc",
            "search.pruner=median", "search.pruner_options={n_startup_trials: 2}"]  # fmt: skip
    assert main([*args, f"hydra.sweep.dir={tmp_path / 'honest'}"]) == 0
    random_test_labels()
    assert main([*args, f"hydra.sweep.dir={tmp_path / 'scrambled'}"]) == 0
    honest = trials(tmp_path / "honest")
    assert trials(tmp_path / "scrambled") == honest
    assert all(len(t[3]) >= 1 for t in honest)  # reported at step resolution


@pytest.mark.slow
def test_tune_picks_and_score_read_validation(tmp_path, random_test_labels, capsys):
    args = ["tune", "+experiment=tuning", *FAST, *QUICK, "tuning.optimizers=[adam,lion]",
            "tuning.trials=2", "tuning.studies=2", "tuning.eval_seeds=[1]", "trainer.epochs=2",
            "trainer.eval_every=2", "tuning.target=0.3", "tuning.baseline=adam"]  # fmt: skip
    assert main([*args, f"hydra.sweep.dir={tmp_path / 'honest'}"]) == 0
    printed = capsys.readouterr().out
    random_test_labels()
    assert main([*args, f"hydra.sweep.dir={tmp_path / 'scrambled'}"]) == 0
    honest, scrambled = (json.loads((tmp_path / run / "tuning.json").read_text())
                         for run in ("honest", "scrambled"))  # fmt: skip
    for name in ("adam", "lion"):
        for key in ("median_of_bests", "study_bests", "eval_time_to_target"):
            assert scrambled["optimizers"][name][key] == honest["optimizers"][name][key]
        assert (
            scrambled["optimizers"][name]["pick"]["params"]
            == (honest["optimizers"][name]["pick"]["params"])
        )
    assert scrambled["score"] == honest["score"]
    assert "profile score" in printed and "speedup vs adam" in printed


@pytest.mark.parametrize(
    ("overrides", "feature"),
    [
        (["trainer.targets=[0.5]"], "trainer.targets"),
        (["scheduler=plateau"], "scheduler=plateau"),
        (["trainer.keep_best=true"], "trainer.keep_best"),
        (["lr_find.validation_batches=2"], "lr_find.validation_batches"),
    ],
)
def test_without_a_validation_split_every_choosing_feature_refuses(overrides, feature, tmp_path):
    from optbench.errors import UserError
    from optbench.train.preflight import check_train_config

    cfg = compose_config(*FAST, "dataset.val_size=0", *overrides)
    with pytest.raises(UserError, match=f"^{feature} chooses by the validation split"):
        check_train_config(cfg)


def test_without_a_validation_split_a_run_reports_test_and_chooses_nothing(tmp_path):
    results = train(compose_config(*FAST, *QUICK, "dataset.val_size=0", "trainer.epochs=2"),
                    tmp_path)  # fmt: skip
    assert results["metric"] == "test_acc" and results["data_split"]["val"] == 0
    assert results["best_epoch"] is None and results["best_test_acc"] is None
    assert "final_val_acc" not in results and results["final_test_acc"] > 0.3
