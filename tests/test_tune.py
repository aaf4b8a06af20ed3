"""`optbench tune`: the same quasi-random points for every optimizer, the median over studies of
each study's best, the self-tuning budget, resume after a kill, and two workers sharing the
studies without losing or repeating a trial."""

from __future__ import annotations

import fcntl
import json
import math
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from conftest import FAST
from omegaconf import OmegaConf
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from optbench.cli import main
from optbench.errors import UserError
from optbench.studies import tuning
from optbench.studies.search_outputs import report_section
from optbench.studies.search_space import read_sections
from optbench.train.trainer import train

QUICK = ["trainer.checkpoint_every=0", "trainer.diagnostics_interval=0"]


def settings(**changes) -> tuning.TuningSettings:
    from helpers import compose_config

    cfg = compose_config("+experiment=tuning", *FAST)
    block = OmegaConf.to_container(cfg.tuning, resolve=True)
    return tuning.read_settings(block | changes)


def tune_args(root: Path, *overrides: str) -> list[str]:
    return ["tune", "+experiment=tuning", *FAST, *QUICK, *overrides, f"hydra.sweep.dir={root}"]


def results(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text())


def config(run_dir: str | Path):
    return OmegaConf.load(Path(run_dir) / "config.yaml")


# --- planning ------------------------------------------------------------------------------


def test_every_optimizer_gets_the_same_quasi_random_points_of_its_own_space():
    s = settings(optimizers=["adam", "lion"], trials=8, studies=2)
    cells = tuning.tuning_cells(s)
    assert [c.name for c in cells] == ["tuning/adam/0", "tuning/lion/0", "tuning/adam/1",
                                       "tuning/lion/1"]  # fmt: skip

    def unit(cell):  # each trial's point mapped back onto the unit square (log scale)
        dims = s.dimensions(cell.optimizer)
        lows = [d.distribution.low for d in dims]
        highs = [d.distribution.high for d in dims]
        return [
            [math.log(t.params[d.name] / lo) / math.log(hi / lo)
             for d, lo, hi in zip(dims, lows, highs, strict=True)]
            for t in cell.trials
        ]  # fmt: skip

    adam0, lion0, adam1, lion1 = ([u for point in unit(c) for u in point] for c in cells)
    assert adam0 == pytest.approx(lion0, abs=1e-12) and adam1 == pytest.approx(lion1, abs=1e-12)
    assert cells[0].trials[0].params != cells[1].trials[0].params  # each in its own space
    assert all(abs(a - b) > 1e-6 for a, b in zip(adam0, adam1, strict=True))  # other points
    adam0, adam1 = unit(cells[0]), unit(cells[2])
    for points in (adam0, adam1):
        assert all(0 <= u < 1 for p in points for u in p)
        # Quasi-random: the 8 points of a study fall in 8 different eighths of each axis.
        for axis in (0, 1):
            assert len({int(p[axis] * 8) for p in points}) == 8


@pytest.mark.parametrize(
    ("entry", "u", "expected"),
    [
        ({"type": "float", "low": 1e-4, "high": 1e-1, "log": True}, 0.5, 10**-2.5),
        ({"type": "float", "low": 0.8, "high": 1.0}, 0.25, 0.85),
        ({"type": "float", "low": 0.0, "high": 1.0, "step": 0.25}, 0.6, 0.75),  # 5 points
        ({"type": "float", "low": 0.0, "high": 1.0, "step": 0.25}, 0.99, 1.0),
        ({"type": "int", "low": 1, "high": 4}, 0.99, 4),  # 4 cells of a quarter each
        ({"type": "int", "low": 1, "high": 4}, 0.2, 1),
        ({"type": "int", "low": 16, "high": 256, "log": True}, 0.5, 64),  # sqrt(16 x 257) = 64.1
        ({"type": "categorical", "choices": ["a", "b", "c"]}, 0.7, "c"),
        ({"type": "categorical", "choices": ["a", "b", "c"]}, 0.3, "a"),
    ],
)
def test_a_unit_point_maps_onto_each_kind_of_dimension(entry, u, expected):
    (dim,) = read_sections({"o": {"x": entry}}, "test")["o"]
    value = dim.from_unit(u)
    assert value == pytest.approx(expected) and type(value) is type(expected)


@pytest.mark.parametrize(
    "entry",
    [
        {"type": "int", "low": 1, "high": 3},
        {"type": "int", "low": 1, "high": 8, "log": True},
        {"type": "float", "low": 0.0, "high": 0.3, "step": 0.1},
        {"type": "categorical", "choices": ["a", "b", "c"]},
    ],
)
def test_a_grid_of_unit_points_reaches_every_value_of_a_discrete_dimension(entry):
    (dim,) = read_sections({"o": {"x": entry}}, "test")["o"]
    values = {dim.from_unit(k / 1000) for k in range(1000)}
    d = dim.distribution
    if hasattr(d, "choices"):
        expected = set(d.choices)
    else:
        step = d.step or 1
        expected = {d.low + k * step for k in range(round((d.high - d.low) / step) + 1)}
    assert sorted(values) == pytest.approx(sorted(expected))


def test_self_tuning_optimizers_search_nothing_and_train_one_and_a_half_times_the_epochs():
    s = settings(optimizers=["adam", "prodigy", "dadapt_adam"], trials=4, studies=3)
    cells = tuning.tuning_cells(s)
    by_optimizer = {name: [c for c in cells if c.optimizer == name] for name in s.optimizers}
    assert len(by_optimizer["adam"]) == 3 and all(len(c.trials) == 4 for c in by_optimizer["adam"])
    for name in ("prodigy", "dadapt_adam"):
        (cell,) = by_optimizer[name]
        (trial,) = cell.trials
        assert trial.params == {} and s.dimensions(name) == ()
        assert s.epochs(name, 10) == 15 and s.epochs(name, 3) == 5  # ceil(4.5)
    assert s.epochs("adam", 3) == 3


def frozen(value, number=0, reached=None, complete=True):
    state = TrialState.COMPLETE if complete else TrialState.PRUNED
    attrs = {"time_to_target": {"0.9": reached}}
    return SimpleNamespace(value=value, number=number, state=state, user_attrs=attrs)


@pytest.mark.parametrize(
    ("values", "maximize", "median", "study"),
    [
        ([0.5, 0.9, 0.7], True, 0.7, 2),
        ([0.5, 0.9, 0.7, 0.8], True, 0.75, 3),  # even: the better of the two middle ones
        ([0.5, 0.9, 0.7, 0.8], False, 0.75, 2),  # a loss: lower is better
        ([None, 0.6, 0.4], True, 0.5, 1),  # a study with no completed trial is left out
        ([0.5, 0.5, 0.9], True, 0.5, 0),  # a tie goes to the earlier study
    ],
)
def test_the_score_is_the_median_of_the_studies_bests_and_its_study_is_picked(
    values, maximize, median, study
):
    bests = [None if v is None else frozen(v) for v in values]
    chosen = tuning.pick(bests, tuning.Scoring(maximize))
    assert chosen.median == pytest.approx(statistics.median(v for v in values if v is not None))
    assert chosen.median == pytest.approx(median)
    assert chosen.study == study and chosen.trial is bests[study]
    assert tuning.pick([None, None], tuning.Scoring(True)) is None


def reached(step):
    return {"epoch": step / 10, "step": step, "examples": 64 * step, "train_time_s": step / 100}


def test_with_a_target_a_study_s_best_is_its_fastest_trial_and_a_miss_is_infinite():
    scoring = tuning.Scoring(True, target=0.9, time="steps")
    fast, slow = frozen(0.91, 0, reached(30)), frozen(0.97, 1, reached(50))  # slower, higher
    close_miss, far_miss = frozen(0.89, 2), frozen(0.5, 3)
    pruned = frozen(0.95, 4, reached(10), complete=False)  # a pruned trial never counts
    assert min([slow, fast, close_miss], key=scoring.rank) is fast
    assert min([close_miss, far_miss], key=scoring.rank) is close_miss  # misses: by value
    assert scoring.score(far_miss) == math.inf and scoring.score(pruned) == math.inf
    seconds = tuning.Scoring(True, target=0.9, time="seconds")
    assert seconds.score(fast) == pytest.approx(0.3)
    # Studies' fastest at 30 and 50 steps and one study that missed: the median is 50 steps,
    # the study at the median is rerun.
    chosen = tuning.pick([fast, slow, close_miss], scoring)
    assert (chosen.median, chosen.study, chosen.trial) == (50, 1, slow)
    assert chosen.bests == [30, 50, math.inf]
    # More than half missed: the median is a miss, and the best of the misses is rerun.
    chosen = tuning.pick([far_miss, close_miss, fast], scoring)
    assert chosen.median == math.inf and chosen.trial is close_miss
    # A tie in time goes to the higher value, then to the earlier study.
    tie = frozen(0.95, 5, reached(30))
    assert tuning.pick([fast, tie], scoring).trial is tie


# --- the command ---------------------------------------------------------------------------


@pytest.mark.slow  # 17 tiny runs in two worker processes: about 40 s on 2 cores
def test_two_workers_tune_every_optimizer_then_rerun_each_median_pick_on_fresh_seeds(tmp_path):
    root = tmp_path / "tune"
    args = tune_args(root, "tuning.optimizers=[sgd,adam,prodigy]", "tuning.trials=2",
                     "tuning.studies=3", "tuning.eval_seeds=[1,2]", "trainer.epochs=2",
                     "tuning.workers=2", "tuning.target=null")  # fmt: skip
    assert main(args) == 0
    summary = json.loads((root / "tuning.json").read_text())
    storage = f"sqlite:///{root / 'optuna.db'}"
    names = optuna.get_all_study_names(storage)
    assert sorted(names) == sorted(
        [f"tuning/{o}/{s}" for o in ("sgd", "adam") for s in range(3)]
        + ["tuning/prodigy/0", "eval/sgd", "eval/adam", "eval/prodigy"]
    )
    cells = {c.name: c for c in tuning.tuning_cells(settings(
        optimizers=["sgd", "adam", "prodigy"], trials=2, studies=3, eval_seeds=[1, 2]))}  # fmt: skip
    for name in names:  # every planned trial ran exactly once, in its own folder
        trials = optuna.load_study(study_name=name, storage=storage).trials
        assert all(t.state == TrialState.COMPLETE for t in trials)
        dirs = [t.user_attrs["run_dir"] for t in trials]
        assert len(set(dirs)) == len(dirs) == (2 if name != "tuning/prodigy/0" else 1)
        if name in cells:
            assert [t.params for t in trials] == [p.params for p in cells[name].trials]
        for t in trials:  # each value is its run's best validation accuracy
            assert t.value == results(t.user_attrs["run_dir"])["best_val_acc"]
    for name in ("sgd", "adam", "prodigy"):
        entry = summary["optimizers"][name]
        bests = [s["best"]["value"] for s in entry["studies"]]
        assert bests == [max(t["value"] for t in s["trials"]) for s in entry["studies"]]
        assert entry["median_of_bests"] == pytest.approx(statistics.median(bests))
        pick = entry["pick"]
        assert entry["studies"][pick["study"]]["best"]["value"] == pytest.approx(
            entry["median_of_bests"] if len(bests) % 2 else sorted(bests)[len(bests) // 2]
        )
        reruns = [e["run_dir"] for e in entry["eval"]]
        assert sorted(config(d).trainer.seed for d in reruns) == [1, 2]
        for d in reruns:  # the reruns train the pick's values
            cfg = config(d)
            assert cfg.optimizer.name == name
            assert {k: OmegaConf.select(cfg, k) for k in pick["params"]} == pick["params"]
            assert cfg.trainer.epochs == (3 if name == "prodigy" else 2)
        assert entry["eval_objective"]["mean"] == pytest.approx(
            statistics.fmean(results(d)["best_val_acc"] for d in reruns)
        )
    tuned = [config(t["run_dir"]) for s in summary["optimizers"]["sgd"]["studies"]
             for t in s["trials"]]  # fmt: skip
    assert {c.trainer.seed for c in tuned} == {0} and {c.trainer.epochs for c in tuned} == {2}
    assert main(["report", str(root / "eval")]) == 0
    report_md = (root / "eval" / "report" / "report.md").read_text()
    assert "## Equal-budget tuning" in report_md and "defaults, 3 epochs (self-tuning)" in report_md


@pytest.mark.slow  # two commands, 4 runs of 6 epochs: about 30 s on 2 cores
def test_a_killed_tuning_resumes_its_interrupted_trial_in_place_and_runs_each_trial_once(tmp_path):
    root = tmp_path / "tune"
    args = tune_args(root, "tuning.optimizers=[adam]", "tuning.trials=3", "tuning.studies=1",
                     "tuning.eval_seeds=[1]", "trainer.epochs=6", "trainer.checkpoint_every=1")  # fmt: skip
    command = [sys.executable, "-m", "optbench", *args]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    second = root / "tuning" / "adam" / "0"
    while not list(second.glob("01_*/checkpoints/*.pt")):  # the second trial has checkpointed
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    (killed_dir,) = second.glob("01_*")
    assert results(killed_dir)["status"] == "interrupted"
    stopped_at = results(killed_dir)["epochs"]

    assert main(args) == 0  # the same command again
    storage = f"sqlite:///{root / 'optuna.db'}"
    trials = optuna.load_study(study_name="tuning/adam/0", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL,
                                         TrialState.COMPLETE, TrialState.COMPLETE]  # fmt: skip
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == 1]
    assert retry.params == trials[1].params
    assert retry.user_attrs["run_dir"] == str(killed_dir)  # the same folder: resumed
    done = results(killed_dir)
    assert done["status"] == "completed" and done["epochs"] == 6 and stopped_at < 6
    # Resumed from its checkpoint, not restarted: the second process logged from a later step
    # on, and the run ends exactly where an uninterrupted run does.
    _, second = sorted(killed_dir.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
    events = EventAccumulator(str(second), size_guidance={"scalars": 0})
    events.Reload()
    assert min(e.step for e in events.Scalars("train/loss")) > 0
    straight = config(killed_dir)
    straight.trainer.resume = None
    uninterrupted = train(straight, tmp_path / "straight")
    assert done["final_test_loss"] == uninterrupted["final_test_loss"]
    assert len({t.user_attrs["run_dir"] for t in trials}) == 3
    summary = json.loads((root / "tuning.json").read_text())
    assert summary["optimizers"]["adam"]["eval"][0]["state"] == "complete"


def test_a_study_resumed_with_other_planned_trials_is_refused():
    s = settings(optimizers=["adam"], trials=2, studies=1)
    (cell,) = tuning.tuning_cells(s)
    study = optuna.create_study(direction="maximize")
    tuning.enqueue(study, cell, [])
    tuning.enqueue(study, cell, [])  # the same plan: resumed, nothing added
    assert len(study.trials) == 2
    (more,) = tuning.tuning_cells(settings(optimizers=["adam"], trials=3, studies=1))
    with pytest.raises(UserError, match="was planned with other trials or values"):
        tuning.enqueue(study, more, [])
    rerun = tuning.eval_cell(s, "adam")
    picked = optuna.create_study(direction="maximize")
    tuning.enqueue(picked, rerun, ["optimizer.lr=0.001"])
    with pytest.raises(UserError, match="was planned with other trials or values"):
        tuning.enqueue(picked, rerun, ["optimizer.lr=0.002"])  # another pick


def test_a_second_tune_on_a_sweep_dir_in_use_is_one_line_exit_2(tmp_path, capsys):
    root = tmp_path / "tune"
    root.mkdir()
    with (root / ".tune.command.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a running command's lock
        code = main(tune_args(root, "tuning.optimizers=[adam]", "tuning.trials=1",
                              "tuning.eval_seeds=[1]", "trainer.epochs=1"))  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.endswith(f"another optbench tune is running in {root}"), err
    assert len(err.splitlines()) == 1
    assert sorted(p.name for p in root.iterdir()) == [".tune.command.lock"]


def test_the_report_tables_picks_of_any_kind_and_skips_an_older_summary(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    (old / "tuning.json").write_text(json.dumps({"optimizers": {}}))
    entry = {"self_tuning": False, "epochs": 2, "median_of_bests": 0.5, "study_bests": [0.5, None],
             "pick": {"params": {"optimizer.lr": 0.00123, "optimizer.nesterov": True}}}  # fmt: skip
    summary = {"studies": 2, "trials_per_study": 3, "direction": "maximize", "eval_seeds": [1],
               "optimizers": {"sgd": entry}}  # fmt: skip
    (new / "tuning.json").write_text(json.dumps(summary))
    text = report_section([old, new], tmp_path)
    assert "an older tuning summary, not shown" in text
    assert (
        "| sgd | 0.5 | 0.5, - | optimizer.lr=0.00123, optimizer.nesterov=True | - | - | not yet rerun |"
        in text
    )
