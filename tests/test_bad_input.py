"""The battery: bad input through the real CLI gives exit 2, one stderr line, no traceback,
and creates no file. Every new check adds its row here."""

from __future__ import annotations

from pathlib import Path

import pytest

from optbench.cli import main

SMALL = ["dataset=synthetic", "dataset.train_size=256", "dataset.test_size=64", "model=mlp",
         "model.hidden=[16]", "trainer.device=cpu", "trainer.progress=false"]  # fmt: skip

# (command, overrides, what the one line says); {file} is a plain text file, {dir} a folder.
# fmt: off
ROWS = [
    ("train", ["optimizer=nope"], "unknown optimizer 'nope'"),
    ("train", ["optimizer.lr=-1"], "lr must be a positive number"),
    ("train", ["trainer.amp=fp16"], "needs a CUDA device"),
    ("train", ["scheduler.warmup=100000"], "leaves no room for the schedule"),
    ("train", ["trainer.seed=abc"], "trainer.seed must be an integer >= 0, got 'abc'"),
    ("train", ["trainer.seed=1.5"], "trainer.seed must be an integer >= 0, got 1.5"),
    ("train", ["trainer.label_smoothing=2"], "trainer.label_smoothing must be in [0, 1), got 2"),
    ("train", ["model.hidden=[0]"], "model.hidden must be an integer >= 1, got 0"),
    ("train", ["model=fastcnn", "model.widths=[4,4]"], "model.widths must be a list of 3"),
    ("train", ["trainer.resume=/nonexistent/run"], "no such run directory or checkpoint file"),
    ("train", ["trainer.resume={file}"], "is not an optbench checkpoint"),
    ("train", ["optimizer=lamb", "+optimizer.amsgrad=true"], "unknown key amsgrad"),
    ("train", ["optimizer.betas=[0.9]", "optimizer=adam"], "betas must be a list of 2 numbers"),
    ("train", ["hydra.run.dir={file}/run"], "is a file, not a folder"),
    ("train", ["hydra.run.dir=/proc/optbench/run"], "/proc is not writable"),
    ("train", ["trainer.batch_size=100000", "trainer.drop_last=true"], "leaves no batch"),
    ("train", ["trainer.device=tpu"], "trainer.device must be auto, cpu"),
    ("train", ["trainer.epochs=0"], "trainer.epochs must be an integer >= 1"),
    ("train", ["trainer.accumulation=0"], "trainer.accumulation must be an integer >= 1"),
    ("train", ["trainer.devices=0"], "trainer.devices must be an integer >= 1"),
    ("train", ["trainer.devices=3"], "trainer.batch_size=128 does not split evenly over 3"),
    ("train", ["trainer.devices=3", "trainer.batch_size=96"], "the last batch of 64 samples"),
    ("train", ["trainer.devices=2", "trainer.sync_batchnorm=true"], "sync_batchnorm needs CUDA"),
    ("lr-find", ["trainer.devices=3"], "does not split evenly over 3 processes"),
    ("train", ["trainer.on_nonfinite=maybe"], "trainer.on_nonfinite must be one of stop, skip"),
    ("train", ["scheduler=plateau", "scheduler.metric=val_f1"], "scheduler.metric must be one of"),
    ("train", ["scheduler=constant", "momentum.schedule=cyclic"], "this LR schedule is flat"),
    (
        "train",
        ["scheduler=onecycle", "trainer.batch_size=256", "trainer.epochs=1"],
        "too few for pct_start",
    ),
    ("train", ["param_groups.lr_multipliers={backbone:2}"], "the model has no module 'backbone'"),
    ("train", ["param_groups.norm_lr_multiplier=0"], "norm_lr_multiplier must be positive"),
    ("train", ["dataset.num_classes=1"], "dataset.num_classes must be at least 2"),
    ("train", ["trainer.epoch=3"], "trainer.epoch"),
    ("train", ["dataset.task=ranking"], "unknown task 'ranking'"),
    ("train", ["dataset=fashion_mnist", "dataset.download=false", "dataset.root={dir}",
               "dataset.search_dirs=[]"], "Fashion-MNIST was not found"),
    ("lr-find", ["lr_find.start_lr=10"], "lr_find needs 0 < start_lr < end_lr"),
    ("schedule", ["optimizer.lr=auto"], "give a number to preview it"),
    ("schedule", ["hydra.run.dir={file}/x"], "is a file, not a folder"),
    ("toy", ["hydra.run.dir={file}/x"], "is a file, not a folder"),
    ("search", [], "the config has no search: block"),
    ("search", ["+experiment=lr_wd_search", "search.sampler=nope"], "search.sampler must be one of tpe"),
    ("search", ["+experiment=lr_wd_search", "search.pruner=nope"], "search.pruner must be one of none"),
    ("search", ["+experiment=lr_wd_search", "search.n_trials=0"], "search.n_trials must be an integer >= 1"),
    ("search", ["+experiment=lr_wd_search", "search.space.optimizer.lr.type=normal"],
     "search.space.optimizer.lr must be {type: float|int|categorical"),
    ("search", ["+experiment=lr_wd_search", "+search.space.optimizer.lr.lo=1"], "unknown field lo"),
    ("search", ["+experiment=lr_wd_search", "search.space.optimizer.lr.low=1.0"], "needs low < high"),
    ("search", ["+experiment=lr_wd_search", "search.space.optimizer.lr.low=0"],
     "on a log scale, so low must be > 0"),
    ("search", ["+experiment=lr_wd_search", "+search.space.optimizer.foo={type:float,low:1,high:2}"],
     "unknown key optimizer.foo in the search space of adamw"),
    ("search", ["+experiment=lr_wd_search", "optimizer.lr=0.01"],
     "'optimizer.lr=0.01' sets optimizer.lr, which the search samples"),
    ("search", ["+experiment=lr_wd_search", "search.optimizers=[adamw,lion]", "optimizer=lion"],
     "'optimizer=lion' sets optimizer, which the search samples"),
    ("train", ["model=airbench94", "model.logit_divisor=0"], "model.logit_divisor must be a positive number"),
    ("tune", [], "the config has no tuning: block"),
    ("tune", ["+experiment=tuning", "tuning.studies=0"], "tuning.studies must be an integer >= 1"),
    ("tune", ["+experiment=tuning", "tuning.optimizers=[adam,nope]"], "unknown optimizer 'nope'"),
    ("tune", ["+experiment=tuning", "tuning.optimizers=[adam,rmsprop]"],
     "tuning.spaces has no search space for 'rmsprop'"),
    ("tune", ["+experiment=tuning", "+tuning.spaces.prodigy={optimizer:{lr:{type:float,low:0.1,high:1.0}}}"],
     "tuning.spaces.prodigy: prodigy is self-tuning"),
    ("tune", ["+experiment=tuning", "tuning.self_tuning_budget=0.5"],
     "tuning.self_tuning_budget must be a number >= 1"),
    ("tune", ["+experiment=tuning", "tuning.eval_seeds=[0,1]"], "must be fresh seeds, but 0 is tuning.seed"),
    ("tune", ["+experiment=tuning", "tuning.spaces.adam.optimizer.lr.low=1.0"], "needs low < high"),
    ("tune", ["+experiment=tuning", "optimizer=adam"], "sets what the tuning protocol sets per run"),
    ("tune", ["+experiment=tuning", "optimizer.lr=0.1"], "sets what the tuning protocol sets per run"),
    ("tune", ["+experiment=tuning", "trainer.seed=1,2"], "lists several values"),
    ("tune", ["+experiment=tuning", "tuning.pruner=nope"], "tuning.pruner must be one of none"),
    ("tune", ["+experiment=tuning", "tuning.eval_seeds=[[1]]"], "each of tuning.eval_seeds must be"),
    ("tune", ["+experiment=tuning", "tuning.optimizers=[prodigy]", "trainer.epochs=abc"],
     "trainer.epochs must be an integer"),
    ("search", ["+experiment=lr_wd_search", "search.storage=nope"], "is not a storage URL"),
    ("search", ["+experiment=lr_wd_search", "search.pruner=median", "search.pruner_options={x:1}"],
     "search.pruner_options for median"),
    ("search", ["+experiment=lr_wd_search", "search.optimizers=[adamw]"],
     "search.per_optimizer.lion: 'lion' is not in search.optimizers"),
    # The validation split: no choice without one, and its size and the targets checked.
    ("train", ["dataset.val_size=0", "trainer.targets=[0.5]"],
     "trainer.targets chooses by the validation split, but this dataset holds none out"),
    ("train", ["dataset.val_size=0", "scheduler=plateau"], "scheduler=plateau chooses by the validation"),
    ("train", ["dataset.val_size=0", "trainer.keep_best=true"], "trainer.keep_best chooses by the"),
    ("train", ["dataset.val_size=0", "optimizer.lr=auto", "lr_find.validation_batches=2"],
     "lr_find.validation_batches chooses by the validation split"),
    ("lr-find", ["dataset.val_size=0", "lr_find.validation_batches=2"],
     "lr_find.validation_batches chooses by the validation split"),
    ("search", ["+experiment=lr_wd_search", "dataset.val_size=0"], "chooses by the validation split"),
    ("search", ["+experiment=lr_wd_search", "dataset.val_size=0", "trainer.targets=[]"],
     "a search or tuning study chooses by the validation split"),
    ("tune", ["+experiment=tuning", "dataset.val_size=0"], "chooses by the validation split"),
    ("tune", ["+experiment=tuning", "dataset.val_size=0", "tuning.target=null", "trainer.targets=[]"],
     "a search or tuning study chooses by the validation split"),
    ("train", ["dataset=markov", "model=gpt", "dataset.val_fraction=0", "trainer.targets=[2.0]"],
     "set one, e.g. dataset.val_fraction=0.1"),
    ("train", ["dataset=fashion_mnist", "dataset.val_size=60000"],
     "dataset.val_size=60000 leaves no training images: fashion_mnist has 60,000"),
    ("train", ["dataset.val_size=-1"], "dataset.val_size must be an integer >= 0, got -1"),
    ("train", ["dataset=fashion_mnist", "dataset.split_seed=-1"], "dataset.split_seed must be an integer >= 0"),
    ("train", ["dataset=markov", "model=gpt", "dataset.val_fraction=0.95"], "needs more text"),
    ("train", ["dataset=markov", "model=gpt", "dataset.test_fraction=1.5"], "dataset.test_fraction must be in [0, 1)"),
    ("train", ["trainer.target_metric=val_bleu"],
     "trainer.target_metric must be a validation metric of the classification task (val_loss, val_acc)"),
    ("train", ["trainer.target_metric=test_acc"], "trainer.target_metric must be a validation metric"),
    ("train", ["trainer.targets=abc"], "trainer.targets must be a list of numbers"),
    ("train", ["trainer.targets=[0.5,abc]"], "trainer.targets must be a list of numbers"),
    ("train", ["trainer.eval_every=-1"], "trainer.eval_every must be an integer >= 0"),
    ("tune", ["+experiment=tuning", "tuning.baseline=nope"], "tuning.baseline must be one of tuning.optimizers"),
    ("tune", ["+experiment=tuning", "tuning.time=hours"], "tuning.time must be one of steps, seconds"),
    ("tune", ["+experiment=tuning", "tuning.target=abc"], "tuning.target must be a number"),
    ("tune", ["+experiment=tuning", "trainer.targets=[0.5]"], "sets what the tuning protocol sets per run"),
]
# fmt: on


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize(("command", "overrides", "message"), ROWS, ids=lambda v: str(v)[:40])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    command, overrides, message, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    (tmp_path / "empty").mkdir()
    before = files_under(tmp_path)
    places = {"{file}": str(tmp_path / "notes.txt"), "{dir}": str(tmp_path / "empty")}
    args = [
        o.replace("{file}", places["{file}"]).replace("{dir}", places["{dir}"]) for o in overrides
    ]
    small = SMALL if command in ("train", "lr-find", "schedule", "search", "tune") else []
    for group in ("model", "dataset"):  # a row that picks its own model or dataset
        if any(o.startswith(f"{group}=") for o in overrides):
            small = [o for o in small if not o.startswith(group)]
    try:
        code = main([command, *small, *args, f"paths.output_dir={tmp_path / 'out'}"])
    except SystemExit as exit_:  # the job got as far as Hydra: refused too late
        pytest.fail(f"refused only after Hydra started the job (exit {exit_.code})")
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert message in err
    assert files_under(tmp_path) == before


def test_a_full_disk_is_refused_before_hydra_writes_its_config(tmp_path, monkeypatch, capsys):
    import shutil

    import optbench.hydra_command as hydra_command

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(hydra_command.shutil, "disk_usage", lambda path: usage._replace(free=4096))
    monkeypatch.chdir(tmp_path)
    code = main(["train", *SMALL, f"paths.output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "only 0.0 MiB free on its disk" in err and len(err.splitlines()) == 1
    assert not any(tmp_path.iterdir())
