"""The libraries under optbench: Optuna's sampler is stated in full and recorded with the study,
Hydra is called as 1.3 and 1.4 want, and the README's torch range is the package's."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import warnings
from importlib import resources
from pathlib import Path

import optuna
import pytest
import tomllib
import yaml
from conftest import FAST

from optbench.cli import main
from optbench.hydra_command import EXECUTION_WHITELIST
from optbench.studies.optuna_study import (
    SAMPLER_ATTR,
    SAMPLERS,
    make_sampler,
    open_study,
    read_settings,
)
from optbench.studies.search_summary import write_summary

ROOT = Path(__file__).resolve().parents[1]
SPACE = {
    "optimizer": {
        "lr": {"type": "float", "low": 1.0e-5, "high": 1.0, "log": True},
        "weight_decay": {"type": "float", "low": 1.0e-6, "high": 1.0e-1, "log": True},
    }
}
# Where a sampler keeps an option, when not as `_<option>`.
ATTRIBUTE = {"deterministic_objective": "_deterministic"}


def settings(sampler: str = "tpe", seed: int = 0):
    return read_settings({"space": SPACE, "n_trials": 14, "sampler": sampler, "seed": seed})


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_each_stated_sampler_option_reaches_optunas_sampler(name):
    sampler = make_sampler(settings(name), earlier=0)
    assert type(sampler) is SAMPLERS[name].sampler
    for option, value in SAMPLERS[name].options.items():
        assert getattr(sampler, ATTRIBUTE.get(option, f"_{option}")) == value, option


def tilted_bowl(values: dict) -> float:
    x = math.log10(values["optimizer.lr"]) + 2.5
    y = math.log10(values["optimizer.weight_decay"]) + 4.0
    return x * x + 0.5 * y * y + 0.6 * x * y


def study_trials(folder: Path, seed: int) -> list[dict]:
    """14 trials (10 random, then 4 of TPE's own) of a fresh study, asked one at a time."""
    s = settings("tpe", seed)
    folder.mkdir()
    study = open_study(s, f"sqlite:///{folder / 'optuna.db'}", maximize=False)
    for _ in range(s.n_trials):
        trial = study.ask()
        study.tell(trial, tilted_bowl(s.space.sample(trial, "adamw")))
    return [t.params for t in study.get_trials()]


def test_one_seed_gives_one_study_and_another_seed_another(tmp_path):
    first = study_trials(tmp_path / "a", seed=0)
    assert study_trials(tmp_path / "b", seed=0) == first
    other = study_trials(tmp_path / "c", seed=1)
    assert other[0] != first[0] and other[-1] != first[-1]


def test_the_study_and_search_json_record_the_sampler(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = open_study(settings("tpe", seed=7), url, maximize=False)
    trial = study.ask()
    study.tell(trial, 1.0)
    record = optuna.load_study(study_name="search", storage=url).user_attrs[SAMPLER_ATTR]
    assert record == {
        "name": "tpe",
        "class": "TPESampler",
        "options": SAMPLERS["tpe"].options,
        "seed": 7,
        "optuna": optuna.__version__,
    }
    write_summary(study, tmp_path, url)
    assert json.loads((tmp_path / "search.json").read_text())["sampler"] == record


def names_hydra_or_omegaconf(caught: warnings.WarningMessage) -> bool:
    """A warning of Hydra's or OmegaConf's: their class, their file, or their subject."""
    text = str(caught.message).lower()
    return (
        caught.category.__module__.split(".")[0] in ("hydra", "omegaconf")
        or any(f"/{package}/" in caught.filename for package in ("hydra", "omegaconf"))
        or any(word in text for word in ("hydra", "omegaconf", "version_base"))
    )


def test_a_run_and_a_sweep_with_a_callback_meet_no_hydra_deprecation(tmp_path):
    # Hydra 1.3 warns when version_base is missing; 1.4 when it is given, and about targets
    # (hydra.callbacks, logging handlers) that the caller does not whitelist.
    quick = [*FAST, "trainer.epochs=1", "trainer.diagnostics_interval=0"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", *quick, f"hydra.run.dir={tmp_path / 'run'}"]) == 0
        sweep = tmp_path / "sweep"
        lr_find = [*FAST, "lr_find.num_iter=10", "optimizer=sgd,adamw", f"hydra.sweep.dir={sweep}"]
        assert main(["lr-find", "-m", *lr_find]) == 0
    assert (sweep / "lr_compare.png").is_file()  # the sweep-end callback, built by Hydra, ran
    found = [f"{w.category.__name__}: {w.message}" for w in caught if names_hydra_or_omegaconf(w)]
    assert found == []


def test_importing_every_optbench_module_meets_no_hydra_deprecation():
    # What runs at import (a resolver registered, a ConfigStore entry) is done before any test.
    code = (
        "import pkgutil, importlib, optbench\n"
        "for m in pkgutil.walk_packages(optbench.__path__, 'optbench.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "always", "-c", code], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lines = out.stderr.lower().splitlines()
    assert [
        line for line in lines if any(w in line for w in ("hydra", "omegaconf", "version_base"))
    ] == []


def targets(node: object, keys: tuple[str, ...]) -> list[str]:
    """Every value under one of `keys` in a YAML tree."""
    if isinstance(node, dict):
        own = [str(v) for k, v in node.items() if k in keys and isinstance(v, str)]
        return own + [t for v in node.values() for t in targets(v, keys)]
    if isinstance(node, list):
        return [t for v in node for t in targets(v, keys)]
    return []


def whitelisted(target: str) -> bool:
    """Hydra's rule: `a.b.*` admits what lies under a.b, anything else names one target."""
    return any(
        target.startswith(pattern[:-1]) if pattern.endswith(".*") else target == pattern
        for pattern in EXECUTION_WHITELIST
    )


def test_every_target_a_config_names_is_on_hydras_execution_whitelist():
    configs = resources.files("optbench.configs")
    found = []
    for path in Path(str(configs)).rglob("*.yaml"):
        tree = yaml.safe_load(path.read_text())
        logging_config = "job_logging" in path.parts or "hydra_logging" in path.parts
        found += targets(tree, ("_target_", "class", "()") if logging_config else ("_target_",))
    assert "optbench.lr_finder.compare.CompareAtSweepEnd" in found  # the walk sees the callbacks
    refused = [t for t in found if not t.startswith("logging.") and not whitelisted(t)]
    assert refused == []


def test_the_readme_states_the_lowest_torch_pair_the_package_requires():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lowest = dict(re.fullmatch(r"(torch|torchvision)>=([\d.]+)", d).groups()
                  for d in dependencies if d.startswith("torch"))  # fmt: skip
    readme = (ROOT / "README.md").read_text()
    stated = re.search(
        r"lowest\s+supported\s+pair\s+is\s+torch\s+([\d.]+)\s+\+\s+torchvision\s+([\d.]+)", readme
    )
    assert stated is not None
    assert (stated[1], stated[2]) == (lowest["torch"], lowest["torchvision"])


@pytest.mark.slow
def test_one_seed_gives_the_same_search_trials_on_optuna_4_and_5(tmp_path):
    """The other major version of Optuna in a venv beside this one (pip fetches it): the script
    that compares them exits 0 only when optbench's TPE proposes the same trials on both."""
    installed = int(optuna.__version__.split(".")[0])
    other = {4: "optuna>=5,<6", 5: "optuna>=4,<5"}.get(installed)
    if other is None:
        pytest.skip(f"Optuna {installed} has no other supported major version to compare")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    fetched = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", other],
                             capture_output=True, text=True)  # fmt: skip
    if fetched.returncode != 0:
        pytest.skip(f"pip could not install {other}: {fetched.stderr.strip().splitlines()[-1:]}")
    script = Path(__file__).parents[1] / "scripts" / "optuna_versions.py"
    out = subprocess.run([sys.executable, str(script), "--other", str(venv / "bin" / "python")],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
