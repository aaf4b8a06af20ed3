"""The battery: bad input through the real CLI gives exit 2, one stderr line, no traceback,
and creates no file. Every new check adds its row here.

Placeholders in the overrides: {file} is a plain text file, {dir} an empty folder, {tmp} the
test's folder (a storage path under it must not appear), {baddb} a sweep dir holding an
optuna.db that is no database, {run:<defect>} a run directory (under {tmp}/runs/) whose
files have that defect (RUNS), and {pkg} a user's package in the working folder
(tests/user_package.py)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from user_package import write_user_package

from optbench.cli import main

SMALL = ["dataset=synthetic", "dataset.train_size=256", "dataset.test_size=64", "model=mlp",
         "model.hidden=[16]", "trainer.device=cpu", "trainer.progress=false"]  # fmt: skip

# (command, overrides, what the one line says); {file} is a plain text file, {dir} a folder.
# fmt: off
SEARCH = ["+experiment=lr_wd_search", "search.n_trials=1"]
TUNE = ["+experiment=tuning", "tuning.optimizers=[adam]", "tuning.trials=1", "tuning.studies=1",
        "tuning.eval_seeds=[1]"]  # fmt: skip


def _without(module: str, row: tuple) -> pytest.param:
    """A row whose storage needs a database driver that must not be installed for it."""
    installed = importlib.util.find_spec(module) is not None
    return pytest.param(*row, marks=pytest.mark.skipif(installed, reason=f"{module} is installed"))


ROWS = [
    ("train", ["optimizer=nope"], "unknown optimizer 'nope'"),
    ("train", ["optimizer.lr=-1"], "lr must be a positive number"),
    ("train", ["trainer.amp=fp16"], "needs a CUDA device"),
    ("train", ["scheduler.warmup=100000"], "leaves no room for the schedule"),
    ("train", ["trainer.seed=abc"], "trainer.seed must be an integer, got 'abc'"),
    ("train", ["trainer.seed=1.5"], "trainer.seed must be an integer, got '1.5'"),
    ("train", ["trainer.label_smoothing=2"], "trainer.label_smoothing must be in [0, 1), got 2"),
    ("train", ["model.hidden=[0]"], "model.hidden must be an integer >= 1, got 0"),
    ("train", ["model=fastcnn", "model.widths=[4,4]"], "model.widths must be a list of 3"),
    ("train", ["trainer.resume=/nonexistent/run"], "no such run directory or checkpoint file"),
    ("train", ["trainer.resume={file}"], "is not an optbench checkpoint"),
    ("train", ["optimizer=lamb", "+optimizer.amsgrad=true"], "optimizer=lamb: unknown key amsgrad"),
    ("train", ["optimizer.betas=[0.9]", "optimizer=adam"], "betas must be a list of 2 numbers"),
    ("train", ["hydra.run.dir={file}/run"], "is a file, not a folder"),
    ("train", ["hydra.run.dir=/proc/optbench/run"], "/proc is not writable"),
    ("train", ["trainer.batch_size=100000", "trainer.drop_last=true"], "is larger than the 256 training samples"),
    ("train", ["trainer.device=tpu"], "trainer.device must be auto, cpu"),
    ("train", ["trainer.epochs=0"], "trainer.epochs must be an integer >= 1"),
    ("train", ["trainer.accumulation=0"], "trainer.accumulation must be an integer >= 1"),
    ("train", ["trainer.devices=0"], "trainer.devices must be an integer >= 1"),
    ("train", ["trainer.devices=2", "trainer.batch_size=127"], "trainer.batch_size=127 does not split evenly over 2"),
    ("train", ["trainer.devices=2", "dataset.train_size=255", "trainer.batch_size=64"], "the last batch of 63 samples"),
    ("train", ["trainer.devices=2", "trainer.sync_batchnorm=true"], "sync_batchnorm needs CUDA"),
    ("lr-find", ["trainer.devices=2", "trainer.batch_size=127"], "does not split evenly over 2 processes"),
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
    ("train", ["trainer.targets=abc"], "trainer.targets must be a list, got 'abc'"),
    ("train", ["trainer.targets=[0.5,abc]"], "trainer.targets[1] must be a number, got 'abc'"),
    ("train", ["trainer.eval_every=-1"], "trainer.eval_every must be an integer >= 0"),
    ("tune", ["+experiment=tuning", "tuning.baseline=nope"], "tuning.baseline must be one of tuning.optimizers"),
    ("tune", ["+experiment=tuning", "tuning.time=hours"], "tuning.time must be one of steps, seconds"),
    ("tune", ["+experiment=tuning", "tuning.target=abc"], "tuning.target must be a number"),
    ("tune", ["+experiment=tuning", "trainer.targets=[0.5]"], "sets what the tuning protocol sets per run"),
    # The schema: unknown keys (also added with +), types, switches, blocks, removed keys.
    ("train", ["+trainer.epoch=3"], "unknown key trainer.epoch (did you mean trainer.epochs?)"),
    ("train", ["+dataset.sepration=0.1"], "unknown key dataset.sepration (did you mean dataset.separation?)"),
    ("train", ["+model.depth=2"], "unknown key model.depth; model takes name, hidden"),
    ("train", ["+scheduler.gamma=0.5"], "unknown key scheduler.gamma"),
    ("train", ["+optimizer.foo=1"], "optimizer=momentum: unknown key foo; it takes"),
    ("train", ["+trainer.clip.norm=1"], "unknown key trainer.clip.norm"),
    ("train", ["+momentum.lo=0.8"], "unknown key momentum.lo (did you mean momentum.low?)"),
    ("train", ["+param_groups.decay=0.1"], "unknown key param_groups.decay"),
    ("train", ["+lr_find.iters=5"], "unknown key lr_find.iters"),
    ("train", ["+paths.logs=x"], "unknown key paths.logs"),
    ("train", ["+nonsense=1"], "unknown key nonsense"),
    ("train", ["trainer.drop_last=perhaps"], "trainer.drop_last must be true or false, got 'perhaps'"),
    ("train", ["trainer.deterministic=perhaps"], "trainer.deterministic must be true or false, got 'perhaps'"),
    ("train", ["trainer.keep_best=maybe"], "trainer.keep_best must be true or false, got 'maybe'"),
    ("train", ["param_groups.no_decay_bias_norm=nah"], "param_groups.no_decay_bias_norm must be true or false"),
    ("train", ["momentum.rescale_buffers=sometimes"], "momentum.rescale_buffers must be true or false"),
    ("train", ["scheduler=onecycle", "scheduler.three_phase=perhaps"], "scheduler.three_phase must be true or false"),
    ("train", ["optimizer=momentum", "+optimizer.nesterov=perhaps"], "optimizer.nesterov must be true or false"),
    ("train", ["trainer.epochs=two"], "trainer.epochs must be an integer, got 'two'"),
    ("train", ["trainer.batch_size=1e9"], "trainer.batch_size must be an integer"),
    ("train", ["trainer.label_smoothing=lots"], "trainer.label_smoothing must be a number, got 'lots'"),
    ("train", ["dataset.noise=loud"], "dataset.noise must be a number, got 'loud'"),
    ("train", ["model.hidden=wide"], "model.hidden must be a list, got 'wide'"),
    ("train", ["model.hidden=[a,b]"], "model.hidden[0] must be an integer, got 'a'"),
    ("train", ["lr_find.num_iter=many"], "lr_find.num_iter must be an integer, got 'many'"),
    ("train", ["trainer.clip=5"], "trainer.clip is a block of keys (mode, max), got 5"),
    ("train", ["trainer.lookahead=on"], "trainer.lookahead is a block of keys"),
    ("train", ["trainer=null"], "trainer must be a config group or block, got None"),
    ("train", ["~optimizer.lr"], "optimizer.lr is missing"),
    ("train", ["~trainer.epochs"], "trainer.epochs is missing; set it rather than remove it"),
    ("train", ["~dataset.val_size"], "dataset.val_size is missing"),
    ("train", ["=5"], "cannot read the overrides"),
    ("lr-find", ["+lr_find.foo=1"], "unknown key lr_find.foo"),
    ("lr-find", ["lr_find.num_iter=abc"], "lr_find.num_iter must be an integer, got 'abc'"),
    ("schedule", ["+schedule.foo=1"], "unknown key schedule.foo; schedule takes compare"),
    ("schedule", ["trainer.epochs=abc"], "trainer.epochs must be an integer, got 'abc'"),
    ("toy", ["+foo=1"], "unknown key foo; the config takes function"),
    ("toy", ["plot.gif=perhaps"], "plot.gif must be true or false, got 'perhaps'"),
    ("toy", ["steps=abc"], "steps must be an integer, got 'abc'"),
    ("toy", ["+plot.width=3"], "unknown key plot.width"),
    ("toy", ["lr_grid=5"], "lr_grid is a block of keys"),
    ("search", ["+experiment=lr_wd_search", "+trainer.epoch=3"], "unknown key trainer.epoch"),
    ("tune", ["+experiment=tuning", "trainer.drop_last=perhaps"], "trainer.drop_last must be true or false"),
    # Values that ran, silently wrong, or crashed after the run folder existed.
    ("train", ["dataset.separation=nan"], "dataset.separation must be a number >= 0, got nan"),
    ("train", ["dataset.noise=-1"], "dataset.noise must be a number >= 0"),
    ("train", ["dataset.augment.crop_padding=-1"], "dataset.augment.crop_padding must be an integer >= 0, got -1"),
    ("train", ["trainer.seed=18446744073709551616"], "trainer.seed must be an integer <= 4294967295"),
    ("train", ["trainer.channels_last=perhaps"], "trainer.channels_last must be auto, true or false"),
    ("train", ["dataset=markov", "model=gpt", "model.mlp_ratio=0"], "model.mlp_ratio must be a positive number"),
    ("train", ["model=vit", "model.mlp_ratio=-1"], "model.mlp_ratio must be a positive number"),
    ("train", ["momentum.schedule=cyclic", "momentum.low=0.95", "momentum.high=0.85"],
     "momentum.low (0.95) must not exceed momentum.high (0.85)"),
    ("train", ["scheduler=multistep", "scheduler.milestones=[50,200]"], "is past the end of the run"),
    ("train", ["scheduler=step", "scheduler.step_size=500"], "is past the end of the run"),
    ("train", ["trainer.accumulation=1000"], "trainer.accumulation=1000 is more micro-batches than an epoch has"),
    ("train", ["trainer.batch_size=1000000000"], "trainer.batch_size=1000000000 is larger than the 256 training samples"),
    ("train", ["trainer.sync_batchnorm=true"], "trainer.sync_batchnorm needs trainer.devices > 1"),
    ("train", ["trainer.compile_mode=reduce-overhead"], "does nothing without trainer.compile"),
    ("train", ["trainer.compile=model", "trainer.compile_mode=reduce-overhead"], "captures CUDA graphs, but the device is cpu"),
    ("train", ["trainer.compile=model", "trainer.compile_mode=max-autotune"], "captures CUDA graphs"),
    ("train", ["optimizer=sophia", "optimizer.update_period=0"], "optimizer=sophia: update_period must be positive"),
    ("train", ["trainer.devices=64"], "trainer.devices=64 would start 64 CPU processes, but this machine has"),
    ("lr-find", ["trainer.devices=64"], "would start 64 CPU processes"),
    ("train", ["lr_find.mode=cubic"], "lr_find.mode must be exp or linear, got 'cubic'"),
    ("train", ["model=gpt"], "model=gpt takes tokens, but the dataset gives images"),
    ("train", ["dataset=markov", "model=mlp", "trainer.tta=mirror"], "trainer.tta=mirror augments images"),
    # Where a run is written: never over another run, never into an unnamed folder.
    ("train", ["hydra.run.dir="], "hydra.run.dir is empty; name the folder to write to"),
    ("train", ["hydra.run.dir={dir}/" + "a" * 300 + "/run"], "is longer than 255 bytes"),
    ("train", ["hydra.run.dir={dir}/.."], "already holds files; continue its run with trainer.resume=auto"),
    ("train", ["-m", "optimizer=sgd,adam", "hydra.sweep.dir={dir}/.."], "already holds files"),
    ("lr-find", ["hydra.run.dir={dir}/.."], "already holds files"),
    ("schedule", ["hydra.run.dir="], "hydra.run.dir is empty"),
    ("toy", ["hydra.run.dir={dir}/.."], "already holds files"),
    # Study storage that cannot be opened, spaces that sample nothing, unreadable runs.

    # A study's storage that cannot be opened: refused before the sweep dir is made.
    ("search", [*SEARCH, "search.storage=sqlite:////nonexistent/dir/x.db"],
     "search.storage: the folder of /nonexistent/dir/x.db does not exist (/nonexistent/dir)"),
    ("search", [*SEARCH, "search.storage=sqlite:///{tmp}/missing/x.db"],
     "missing/x.db does not exist ({tmp}/missing); create it first"),
    _without("psycopg", ("search", [*SEARCH, "search.storage=postgresql://u:secret@localhost/db"],
     "search.storage 'postgresql://u:***@localhost/db' needs the database driver psycopg, which is not installed")),
    _without("psycopg2", ("search", [*SEARCH, "search.storage=postgresql+psycopg2://u@localhost/db"],
     "needs the database driver psycopg2, which is not installed")),
    _without("MySQLdb", ("search", [*SEARCH, "search.storage=mysql://u@localhost/db"],
     "needs the database driver mysqldb, which is not installed")),
    ("search", [*SEARCH, "search.storage=journal:/nonexistent/x.log"],
     "search.storage: the folder of /nonexistent/x.log does not exist"),
    ("search", [*SEARCH, "search.storage=journal:{tmp}/missing/x.log"], "does not exist"),
    ("search", [*SEARCH, "search.storage=journal:{dir}"], "is a folder; name a file, e.g. journal:"),
    ("search", [*SEARCH, "search.storage=sqlite:///{dir}"], "is a folder; name a file, e.g. sqlite:///"),
    ("search", [*SEARCH, "search.storage=sqlite:///{file}"], "notes.txt is not an SQLite database"),
    ("search", [*SEARCH, "search.storage=journal:{file}"], "notes.txt is not an Optuna journal"),
    ("search", [*SEARCH, "search.storage=sqlite:///{file}/x.db"], "notes.txt is a file, not a folder"),
    ("search", [*SEARCH, "search.storage=sqlite://"], "is an in-memory database"),
    ("search", [*SEARCH, "hydra.sweep.dir={baddb}"], "hydra.sweep.dir: {baddb}/optuna.db is not an SQLite database"),
    ("tune", [*TUNE, "tuning.storage=sqlite:////nonexistent/dir/x.db"],
     "tuning.storage: the folder of /nonexistent/dir/x.db does not exist"),
    _without("psycopg", ("tune", [*TUNE, "tuning.storage=postgresql://u@localhost/db"],
     "tuning.storage 'postgresql://u@localhost/db' needs the database driver psycopg")),
    _without("MySQLdb", ("tune", [*TUNE, "tuning.storage=mysql://u@localhost/db"], "needs the database driver mysqldb")),
    ("tune", [*TUNE, "tuning.storage=journal:/nonexistent/x.log"], "tuning.storage: the folder of /nonexistent/x.log"),
    ("tune", [*TUNE, "tuning.storage=journal:{dir}"], "tuning.storage: {dir} is a folder"),
    ("tune", [*TUNE, "tuning.storage=sqlite:///{file}"], "tuning.storage: {file} is not an SQLite database"),
    ("tune", [*TUNE, "tuning.storage=sqlite:///:memory:"], "is an in-memory database"),
    # Search spaces that sample nothing, or a range of one value.
    ("search", [*SEARCH, "~search.space.optimizer.lr", "~search.space.optimizer.weight_decay"],
     "search.space holds nothing to sample"),
    ("search", [*SEARCH, "search.space=null"], "search.space must map config keys to {type:"),
    ("search", [*SEARCH, "search.space.optimizer.weight_decay.low=0.5", "search.space.optimizer.weight_decay.high=0.5"],
     "search.space.optimizer.weight_decay needs low < high, got low=0.5, high=0.5"),
    ("search", [*SEARCH, "~search.space.optimizer.lr", "+search.space.optimizer.lr={type:int,low:2,high:2}"],
     "search.space.optimizer.lr needs low < high, got low=2, high=2"),
    ("search", [*SEARCH, "~search.space.optimizer.lr", "+search.space.optimizer.lr={type:categorical,choices:[]}"],
     "search.space.optimizer.lr.choices must be a non-empty list"),
    ("search", [*SEARCH, "search.optimizers=[adamw,adamw]", "~search.per_optimizer"],
     "search.optimizers must list distinct optimizers"),
    ("tune", [*TUNE, "tuning.spaces.adam.optimizer.lr.low=0.01", "tuning.spaces.adam.optimizer.lr.high=0.01"],
     "tuning.spaces.adam.optimizer.lr needs low < high"),
    # optbench report: no run to read, or none that can be read (each listed as malformed
    # beside readable runs; tests/test_report.py).
    ("report", ["{dir}"], "no runs found under"),
    ("report", ["{file}"], "notes.txt is not a directory"),
    ("report", ["{tmp}/nothing_here"], "nothing_here does not exist"),
    ("report", ["{run:results_list}"], "no readable run under {run:results_list}: it is malformed, e.g. {run:results_list}: results.json (not a JSON object)"),
    ("report", ["{run:results_number}"], "results.json (not a JSON object)"),
    ("report", ["{run:results_string}"], "results.json (not a JSON object)"),
    ("report", ["{run:results_cut}"], "results.json (not valid JSON: Expecting"),
    ("report", ["{run:results_nan}"], "results.json (completed without a number for final_val_acc)"),
    ("report", ["{run:results_diagnosis}"], "results.json (diagnosis is not a mapping: [1])"),
    ("report", ["{run:results_metric}"], "results.json (metric is not a metric name: 5)"),
    ("report", ["{run:config_yaml}"], "config.yaml (not valid YAML: "),
    ("report", ["{run:config_list}"], "config.yaml (not a mapping of settings)"),
    ("report", ["{run:hydra_yaml}"], ".hydra/config.yaml (not valid YAML: mapping values are not allowed here (line 1))"),
    ("report", ["{run:metrics_line}"], "metrics.jsonl (line 2 is not valid JSON)"),
    ("report", ["{run:metrics_list}"], "metrics.jsonl (line 1: not a JSON object)"),
    ("report", ["{run:metrics_value}"], "metrics.jsonl (line 1: val_acc is not a number: 'high')"),
    ("report", ["{run:results_list}", "{run:config_yaml}"], "all 2 are malformed"),
    ("search", [*SEARCH, "~search.space.optimizer.lr",
                "+search.space.optimizer.lr={type:categorical,choices:[0.1,[1]]}"],
     "search.space.optimizer.lr.choices must be numbers, strings, true/false or null"),
    # A user's own code ({pkg}: tests/user_package.py written into the working folder).
    ("train", ["optimizer=custom"], "optimizer=custom needs optimizer.target"),
    ("train", ["scheduler=custom"], "scheduler.target"),
    ("train", ["model=custom"], "model=custom needs model.target"),
    ("train", ["optimizer=custom", "optimizer.target=nopkg.opt.Adam"], "no module named 'nopkg'"),
    ("train", ["optimizer=custom", "optimizer.target={pkg}.opt.Nope"], "module userpkg.opt has no attribute 'Nope'"),
    ("train", ["optimizer=custom", "optimizer.target=MyAdam"], "give the module too"),
    ("train", ["optimizer=custom", "optimizer.target={pkg}.opt.not_a_class"], "is not a torch.optim.Optimizer subclass (it is the function not_a_class)"),
    ("train", ["optimizer=custom", "optimizer.target={pkg}.opt.MyAdam", "+optimizer.beta=0.9"], "optimizer=custom: unknown key beta"),
    ("train", ["optimizer=custom", "optimizer.target={pkg}.opt.MyAdam", "optimizer.name=adam"], "optimizer.name=adam is optbench's own optimizer"),
    ("train", ["optimizer=custom", "optimizer.target={pkg}.opt.NeedsRealNumbers"], "raised RuntimeError on the meta device"),
    ("train", ["optimizer=lookahead", "optimizer.base={pkg}.opt.Nope"], "has no attribute 'Nope'"),
    ("train", ["scheduler=custom", "scheduler.target={pkg}.sched.nan_at_three"], "returned nan at step 3"),
    ("train", ["scheduler=custom", "scheduler.target={pkg}.sched.one_argument"], "must take two arguments, (step, total_steps)"),
    ("train", ["scheduler=custom", "scheduler.target={pkg}.opt.MyAdam"], "must be a function f(step, total_steps) -> factor, got a class"),
    ("train", ["model=custom", "model.target={pkg}.opt.MyAdam"], "is not a torch.nn.Module subclass"),
    ("train", ["model=custom", "model.target={pkg}.models.Net", "+model.width=3"], "unknown key model.width"),
    ("train", ["--config-dir", "{tmp}/missing"], "--config-dir {tmp}/missing: no such folder"),
    ("train", ["--config-dir", "{pkg}/..", "optimizer=nope"], "unknown optimizer 'nope'"),
    ("toy", ["optimizers=[sgd,{pkg}.opt.not_a_class]"], "is not a torch.optim.Optimizer subclass"),
]
# fmt: on


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def _results(**changes: object) -> dict:
    """A complete results.json of a classifier's run (schema 2), with `changes`."""
    results = {
        "schema": 2, "status": "completed", "model": "mlp", "dataset": "synthetic",
        "optimizer": "sgd", "scheduler": "cosine", "seed": 0, "task": "classification",
        "metric": "val_acc", "higher_is_better": True, "epochs": 1, "steps": 4,
        "planned_epochs": 1, "planned_steps": 4, "train_time_s": 1.0, "wall_time_s": 1.5,
        "final_val_acc": 0.5, "best_val_acc": 0.5, "final_test_acc": 0.5, "diagnosis": None,
    }  # fmt: skip
    return results | changes


RECORD = {"epoch": 1, "step": 4, "examples": 256, "train_time_s": 1.0, "val_acc": 0.5}
# {run:<defect>}: the files (name -> text) that replace a sound run's.
RUNS = {
    "results_list": {"results.json": "[1, 2]"},
    "results_number": {"results.json": "3"},
    "results_string": {"results.json": '"done"'},
    "results_cut": {"results.json": '{"status": '},
    "results_nan": {"results.json": json.dumps(_results(final_val_acc=float("nan")))},
    "results_diagnosis": {"results.json": json.dumps(_results(status="diverged", diagnosis=[1]))},
    "results_metric": {"results.json": json.dumps(_results(metric=5))},
    "config_yaml": {"config.yaml": "optimizer: [sgd,\n  lr: }\n"},
    "config_list": {"config.yaml": "- 1\n- 2\n"},
    "hydra_yaml": {"config.yaml": None, ".hydra/config.yaml": "optimizer: name: sgd\n"},
    "metrics_line": {
        "metrics.jsonl": json.dumps(RECORD) + "\nnot json\n" + json.dumps(RECORD) + "\n"
    },
    "metrics_list": {"metrics.jsonl": "[1, 2]\n"},
    "metrics_value": {"metrics.jsonl": json.dumps(RECORD | {"val_acc": "high"}) + "\n"},
}


def write_run(path: Path, defect: str) -> None:
    """A sound run directory at `path`, then its files replaced as RUNS[defect] says."""
    config = {"dataset": {"name": "synthetic"}, "model": {"name": "mlp"},
              "optimizer": {"name": "sgd", "lr": 0.1}, "trainer": {"seed": 0}}  # fmt: skip
    files = {
        "config.yaml": yaml.safe_dump(config),
        "results.json": json.dumps(_results()),
        "metrics.jsonl": json.dumps(RECORD) + "\n",
    } | RUNS[defect]
    for name, text in files.items():
        if text is not None:
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_text(text)


def _places(tmp_path: Path, texts: list[str]) -> dict[str, str]:
    """Each placeholder the texts name -> its path, made before the command runs."""
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    (tmp_path / "empty").mkdir()
    places = {"{file}": tmp_path / "notes.txt", "{dir}": tmp_path / "empty", "{tmp}": tmp_path}
    places["{baddb}"] = tmp_path / "sweep"
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "optuna.db").write_text("not a database\n")
    if any("{pkg}" in t for t in texts):  # the user's package, importable from here
        write_user_package(tmp_path)
        places["{pkg}"] = "userpkg"
    for defect in sorted({m for t in texts for m in re.findall(r"\{run:(\w+)\}", t)}):
        places[f"{{run:{defect}}}"] = tmp_path / "runs" / defect
        write_run(tmp_path / "runs" / defect, defect)
    return {k: str(v) for k, v in places.items()}


def _fill(text: str, places: dict[str, str]) -> str:
    for key, value in places.items():
        text = text.replace(key, value)
    return text


@pytest.mark.parametrize(("command", "overrides", "message"), ROWS, ids=lambda v: str(v)[:40])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    command, overrides, message, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # importing a user's module
    places = _places(tmp_path, [*overrides, message])
    before = files_under(tmp_path)
    args = [_fill(o, places) for o in overrides]
    small = SMALL if command in ("train", "lr-find", "schedule", "search", "tune") else []
    for group in ("model", "dataset"):  # a row that picks its own model or dataset
        if any(o.startswith(f"{group}=") for o in overrides):
            small = [o for o in small if not o.startswith(group)]
    out = [] if command == "report" else [f"paths.output_dir={tmp_path / 'out'}"]
    try:
        code = main([command, *small, *args, *out])
    except SystemExit as exit_:  # the job got as far as Hydra: refused too late
        pytest.fail(f"refused only after Hydra started the job (exit {exit_.code})")
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert _fill(message, places) in err
    assert files_under(tmp_path) == before
    assert not Path("/nonexistent").exists()


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
