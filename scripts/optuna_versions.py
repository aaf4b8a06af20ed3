"""Does one seed give one study on two Optuna versions? Runs small searches in two Pythons (this
one, and `--other`, e.g. a venv with Optuna 4): one with each of optbench's samplers
(`optbench.studies.optuna_study.SAMPLERS`, every option stated) and one with Optuna's bare
`TPESampler(seed=0)`, whose defaults changed in Optuna 5 (multivariate, constant liar).

    python -m venv --system-site-packages /tmp/venv-optuna4
    /tmp/venv-optuna4/bin/pip install --no-deps 'optuna==4.*'
    python scripts/optuna_versions.py --other /tmp/venv-optuna4/bin/python

Each study asks for its trials one at a time (as a search worker does) on a toy objective of a
log-uniform lr and weight decay, so only the sampler decides what is proposed. Prints the trial
lists of optbench's TPE and of the bare TPESampler from both Pythons, whether each sampler's
trials match, and exits 0 only when optbench's default sampler (tpe) matches.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

SPACE = {
    "optimizer": {
        "lr": {"type": "float", "low": 1.0e-5, "high": 1.0, "log": True},
        "weight_decay": {"type": "float", "low": 1.0e-6, "high": 1.0e-1, "log": True},
    }
}
BARE = "TPESampler(seed) bare"


def toy_loss(values: dict[str, Any]) -> float:
    """A tilted bowl in log space, lowest at lr 3e-3, weight decay 1e-4."""
    x = math.log10(values["optimizer.lr"]) + 2.5
    y = math.log10(values["optimizer.weight_decay"]) + 4.0
    return x * x + 0.5 * y * y + 0.6 * x * y


def run_studies(n_trials: int, seed: int) -> dict[str, Any]:
    """Every study's trials in this Python, as JSON-ready data."""
    import optuna

    from optbench.studies.optuna_study import SAMPLER_ATTR, SAMPLERS, open_study, read_settings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials, records = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for name in SAMPLERS:
            block = {"space": SPACE, "n_trials": n_trials, "sampler": name, "seed": seed}
            settings = read_settings(block)
            study = open_study(settings, f"sqlite:///{folder}/{name}.db", maximize=False)
            records[name] = study.user_attrs[SAMPLER_ATTR]
            try:
                trials[name] = _ask_and_tell(study, settings.space, n_trials)
            except ImportError as err:  # cmaes needs the `cmaes` package
                trials[name] = f"cannot run: {err}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        bare = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    trials[BARE] = _ask_and_tell(bare, settings.space, n_trials)
    return {"optuna": optuna.__version__, "samplers": records, "trials": trials}


def _ask_and_tell(study: Any, space: Any, n_trials: int) -> list[dict[str, float]]:
    rows = []
    for _ in range(n_trials):
        trial = study.ask()
        values = space.sample(trial, "adamw")
        study.tell(trial, toy_loss(values))
        rows.append(values)
    return rows


def in_python(python: str, n_trials: int, seed: int) -> dict[str, Any]:
    script = str(Path(__file__).resolve())
    argv = [python, script, "--json", f"--trials={n_trials}", f"--seed={seed}"]
    return json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


def show(result: dict[str, Any], sampler: str, where: str) -> None:
    print(f"  Optuna {result['optuna']} ({where}):")
    for number, values in enumerate(result["trials"][sampler]):
        lr, wd = values["optimizer.lr"], values["optimizer.weight_decay"]
        print(f"    {number:2d}  lr {lr:.6e}  weight_decay {wd:.6e}")


def first_difference(a: list, b: list) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", help="the other Python, with another Optuna version")
    parser.add_argument("--trials", type=int, default=20, help="trials per study (10 random)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print this Python's studies as JSON")
    args = parser.parse_args()
    if args.json:
        print(json.dumps(run_studies(args.trials, args.seed)))
        return 0
    if not args.other:
        parser.error("--other PYTHON is required (a Python with another Optuna version)")
    here = in_python(sys.executable, args.trials, args.seed)
    other = in_python(args.other, args.trials, args.seed)
    versions = f"Optuna {here['optuna']} (this Python) and {other['optuna']} (--other)"
    for sampler in ("tpe", BARE):
        title = "optbench's tpe" if sampler == "tpe" else BARE
        print(f"{title}, seed {args.seed}, {args.trials} trials:")
        show(here, sampler, "this Python")
        show(other, sampler, "--other")
    print(f"\n{versions}, seed {args.seed}, {args.trials} trials each:")
    same = {}
    for sampler in here["trials"]:
        ours, theirs = here["trials"][sampler], other["trials"][sampler]
        options = here["samplers"].get(sampler, {}).get("options", "Optuna's defaults")
        if isinstance(ours, str) or isinstance(theirs, str):
            print(f"  {sampler:<22} {ours if isinstance(ours, str) else theirs}")
            same[sampler] = False
            continue
        first = first_difference(ours, theirs)
        same[sampler] = first is None
        verdict = "the same trials" if first is None else f"differ from trial {first}"
        print(f"  {sampler:<22} {verdict:<22} {json.dumps(options)}")
    print(f"optbench's default sampler (tpe): {'MATCHES' if same['tpe'] else 'DIFFERS'}")
    return 0 if same["tpe"] else 1


if __name__ == "__main__":
    sys.exit(main())
