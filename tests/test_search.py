"""`optbench search`: it finds a good LR, prunes, resumes after a killed worker, and shares a
study between workers without losing or repeating a trial."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import FAST
from optuna.trial import TrialState

from optbench.cli import main
from optbench.errors import UserError
from optbench.report.comparison import compare
from optbench.report.runs import PRUNED
from optbench.report.tables import groups_csv
from optbench.studies.optuna_study import check_storage, open_storage
from optbench.train.trainer import train

# Only the LR is searched, log-uniform over seven decades: the top two diverge or stall.
LR_ONLY = ["~search.space.optimizer.weight_decay", "search.space.optimizer.lr.high=10.0"]
QUICK = ["trainer.checkpoint_every=0", "trainer.diagnostics_interval=0"]


def search_args(sweep: Path, *overrides: str) -> list[str]:
    return ["search", "+experiment=lr_wd_search", *FAST, *QUICK, *LR_ONLY, *overrides,
            f"hydra.sweep.dir={sweep}"]  # fmt: skip


def load(sweep: Path) -> optuna.Study:
    return optuna.load_study(study_name="search", storage=f"sqlite:///{sweep / 'optuna.db'}")


def results(trial: optuna.trial.FrozenTrial) -> dict:
    return json.loads((Path(trial.user_attrs["run_dir"]) / "results.json").read_text())


def test_a_search_finds_an_lr_in_the_range_a_grid_calls_good(fast_cfg, tmp_path):
    # The good range, found without Optuna: the LRs of a decade grid whose best accuracy is
    # within 0.02 of the grid's best, widened by half a decade on each side.
    grid = {lr: 0.0 for lr in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)}
    for lr in grid:
        cfg = fast_cfg("+experiment=lr_wd_search", *QUICK, f"optimizer.lr={lr}", "trainer.epochs=2")
        out = train(cfg, tmp_path / "grid" / str(lr))
        grid[lr] = out["best_val_acc"] if out["best_val_acc"] is not None else 0.0
    best_acc = max(grid.values())
    good = [lr for lr, acc in grid.items() if acc >= best_acc - 0.02]
    low, high = min(good) / math.sqrt(10), max(good) * math.sqrt(10)
    assert low > 1e-5 and high < 10.0  # the range is a real constraint on the search
    sweep = tmp_path / "search"
    code = main(search_args(sweep, "trainer.epochs=2", "search.n_trials=8", "search.sampler=qmc"))
    assert code == 0
    summary = json.loads((sweep / "search.json").read_text())
    lr = summary["best"]["params"]["optimizer.lr"]
    assert low <= lr <= high, (lr, grid)
    assert summary["best"]["value"] >= best_acc - 0.05
    assert len(summary["trials"]) == 8 and summary["importances"] == {"optimizer.lr": 1.0}
    assert (sweep / "optimization_history.png").stat().st_size > 0
    # A diverged trial still has a value (the worst, 0.0): the study went on.
    diverged = [t for t in load(sweep).trials if t.user_attrs["status"] == "diverged"]
    assert all(t.state == TrialState.COMPLETE and t.value == 0.0 for t in diverged)


def test_a_hopeless_trial_is_pruned_and_the_report_leaves_it_out_of_the_means(tmp_path, capsys):
    sweep = tmp_path / "search"
    sweep.mkdir()
    study = optuna.create_study(
        study_name="search", storage=f"sqlite:///{sweep / 'optuna.db'}", direction="maximize"
    )
    for lr in (3e-3, 5e-3, 1e-2):
        study.enqueue_trial({"optimizer.lr": lr})
    study.enqueue_trial({"optimizer.lr": 1e-5})  # learns nothing in 4 epochs
    options = "search.pruner_options={n_startup_trials: 3, n_warmup_steps: 0}"
    args = search_args(sweep, "trainer.epochs=4", "search.n_trials=4", "search.pruner=median",
                       options)  # fmt: skip
    assert main(args) == 0
    trials = load(sweep).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED]
    bad = results(trials[3])
    assert bad["status"] == PRUNED and bad["epochs"] == 1 and bad["planned_epochs"] == 4
    assert list((Path(trials[3].user_attrs["run_dir"]) / "checkpoints").glob("*.pt"))
    assert all(results(t)["status"] == "completed" for t in trials[:3])

    c = compare([sweep], None, None, 0.05)
    (pruned_group,) = [s for s in c.summaries if s.group.with_status(PRUNED)]
    assert pruned_group.group.completed == [] and pruned_group.group.status_counts() == {PRUNED: 1}
    assert all(len(s.group.completed) == 1 for s in c.summaries if s is not pruned_group)
    rows = groups_csv(c.summaries, c.swept, c.against).splitlines()
    pruned_column = rows[0].split(",").index("pruned")
    assert sorted(r.split(",")[pruned_column] for r in rows[1:]) == ["0", "0", "0", "1"]
    assert main(["report", str(sweep)]) == 0
    report_md = (sweep / "report" / "report.md").read_text()
    assert "pruned by the search after 1 of 4 epochs" in report_md
    assert "optimization_history.png" in report_md


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "optbench", *args]


@pytest.mark.slow  # two processes start: about 20 s on 2 cores
def test_a_killed_worker_s_trial_is_asked_again_and_the_study_ends_with_n_trials(tmp_path):
    sweep = tmp_path / "search"
    args = search_args(sweep, "trainer.epochs=8", "search.n_trials=3", "search.sampler=random")
    worker = subprocess.Popen(command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(sweep.glob("1_*/metrics.jsonl")):  # the second trial is training
        assert worker.poll() is None and time.monotonic() < deadline, worker.stderr.read()[-2000:]
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 128 + signal.SIGTERM
    killed = load(sweep).trials[1]
    assert killed.state == TrialState.RUNNING
    assert results(killed)["status"] == "interrupted"

    assert main(args) == 0  # the same command again: resume
    trials = load(sweep).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [1]
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == 1]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    values = [t.params["optimizer.lr"] for t in complete]
    assert len(set(values)) == 3  # none run twice
    assert all(results(t)["status"] == "completed" for t in complete)


@pytest.mark.slow  # three processes start: about 30 s on 2 cores
def test_two_workers_share_one_study_without_losing_or_repeating_a_trial(tmp_path):
    sweep = tmp_path / "search"
    args = search_args(sweep, "trainer.epochs=2", "search.n_trials=5", "search.workers=2",
                       "search.sampler=random")  # fmt: skip
    assert main(args) == 0
    trials = load(sweep).trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    run_dirs = [Path(t.user_attrs["run_dir"]) for t in trials]
    assert sorted(p.name.split("_")[0] for p in run_dirs) == ["0", "1", "2", "3", "4"]
    assert all(results(t)["status"] == "completed" for t in trials)
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == sorted(p.name for p in run_dirs)
    assert len({t.params["optimizer.lr"] for t in trials}) == 5  # workers seed differently
    assert json.loads((sweep / "search.json").read_text())["n_finished"] == 5


@pytest.mark.parametrize("url", ["sqlite:///{sweep}/other.db", "journal:{sweep}/journal.log"])
def test_any_storage_url_and_the_journal_file_hold_the_study(tmp_path, url):
    sweep = tmp_path / "search"
    storage = url.format(sweep=sweep)
    args = search_args(
        sweep, "trainer.epochs=1", "search.n_trials=2", f"search.storage='{storage}'"
    )
    assert main(args) == 0
    if storage.startswith("journal:"):
        backend = optuna.storages.journal.JournalFileBackend(storage.removeprefix("journal:"))
        storage = optuna.storages.JournalStorage(backend)
    study = optuna.load_study(study_name="search", storage=storage)
    assert len(study.trials) == 2 and not (sweep / "optuna.db").exists()


def test_a_storage_may_be_in_the_sweep_dir_the_search_makes_but_in_no_other_missing_folder(
    tmp_path,
):
    sweep = tmp_path / "search"
    for url in (f"journal:{sweep}/journal.log", f"sqlite:///{sweep}/other.db"):
        check_storage(url, "search.storage", sweep)  # the search makes the sweep dir first
        with pytest.raises(UserError, match=r"does not exist .*; create it first$"):
            check_storage(url.replace(str(sweep), str(tmp_path / "other")), "search.storage", sweep)
    assert not any(tmp_path.iterdir())


def test_a_database_server_is_asked_once_with_a_short_timeout(monkeypatch):
    from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2
    from sqlalchemy.exc import OperationalError

    from optbench.studies import optuna_study

    monkeypatch.setattr(PGDialect_psycopg2, "import_dbapi", classmethod(lambda cls: object()))
    asked: dict = {}

    class Refused:
        def connect(self):
            refused = Exception("connection to server failed: Connection refused\n\tIs it up?")
            raise OperationalError("SELECT 1", {}, refused)

        def dispose(self):
            asked["disposed"] = True

    def create_engine(url, **kwargs):
        asked.update(kwargs, url=url.render_as_string(hide_password=False))
        return Refused()

    monkeypatch.setattr(optuna_study, "create_engine", create_engine)
    url = "postgresql+psycopg2://u:secret@db.example/optuna"
    with pytest.raises(UserError) as refused:
        check_storage(url, "search.storage")
    assert str(refused.value) == (
        "search.storage: cannot connect to postgresql+psycopg2://u:***@db.example/optuna: "
        "connection to server failed: Connection refused"
    )
    assert asked["url"] == url and asked["connect_args"] == {"connect_timeout": 10}
    assert asked["disposed"]


def test_a_storage_spoilt_after_the_check_is_one_line_when_opened(tmp_path):
    spoilt = tmp_path / "optuna.db"
    spoilt.write_text("not a database any more\n")
    with pytest.raises(UserError, match=r"^cannot open the study storage sqlite:///.*optuna.db: "):
        open_storage(f"sqlite:///{spoilt}")
