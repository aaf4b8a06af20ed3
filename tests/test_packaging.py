"""optbench installs as a normal package: the configs travel inside it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_list_matches_the_source_tree():
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "optbench").rglob("__init__.py")
    }
    assert listed == found | {"optbench.configs"}


def test_a_non_editable_install_finds_its_configs(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("optbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert (
        "optbench/configs/train.yaml" in names and "optbench/configs/optimizer/adamw.yaml" in names
    )
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    script = (
        "import optbench, sys; from pathlib import Path;"
        "from hydra import compose, initialize_config_module;"
        "assert Path(optbench.__file__).is_relative_to(sys.argv[1]), optbench.__file__;"
        "initialize_config_module('optbench.configs', version_base='1.3');"
        "print(compose('train', overrides=['optimizer=adamw']).optimizer.name)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(site)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "adamw"
