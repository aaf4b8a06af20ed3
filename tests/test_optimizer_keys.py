"""Every optimizer's keys are checked against what it really takes: a typo is exit 2."""

from __future__ import annotations

import subprocess

import pytest
import torch
from conftest import FAST
from helpers import compose_config
from omegaconf import OmegaConf

from optbench.errors import UserError
from optbench.optim import OPTIMIZERS
from optbench.optim.factory import check_keys, optimizer_config
from optbench.optim.registry import OptimizerInfo, load_object
from optbench.train.preflight import check_train_config


def check(*overrides: str) -> None:
    """What `optbench train` checks before it loads any data."""
    check_train_config(compose_config(*FAST, *overrides))


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_takes_its_own_documented_config(name):
    check(f"optimizer={name}")
    if OPTIMIZERS[name].reference:
        check(f"optimizer={name}", "optimizer.impl=reference")


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_an_unknown_key_is_a_user_error_naming_it_for_every_optimizer(name):
    with pytest.raises(UserError, match=f"optimizer={name}: unknown key not_a_key; it takes"):
        check(f"optimizer={name}", "+optimizer.not_a_key=1")


def test_a_key_a_library_swallows_in_its_kwargs_is_refused():
    """pytorch-optimizer's Lamb takes **kwargs: it builds with amsgrad=True without a word."""
    lamb = load_object(OPTIMIZERS["lamb"].backend)
    lamb([torch.zeros(2, requires_grad=True)], amsgrad=True)  # what the check stands in for
    for name in ("lamb", "lion", "schedule_free", "sophia", "lars"):
        with pytest.raises(UserError, match="unknown key amsgrad"):
            check(f"optimizer={name}", "+optimizer.amsgrad=true")


def test_a_wrapper_takes_its_own_keys_and_its_bases():
    check("optimizer=lookahead", "optimizer.base=sgd", "+optimizer.momentum=0.9", "optimizer.k=3")
    with pytest.raises(UserError, match="optimizer=lookahead: unknown key amsgrad"):
        check("optimizer=lookahead", "optimizer.base=lamb", "+optimizer.amsgrad=true")
    with pytest.raises(UserError, match="unknown key ns_steps"):  # Muon's, not AdamW's
        check("optimizer=lookahead", "+optimizer.ns_steps=5")


@pytest.mark.parametrize(
    "name", [n for n in OPTIMIZERS if "betas" in optimizer_config(n) and n != "lookahead"]
)
def test_betas_of_the_wrong_length_are_a_user_error(name):
    length = len(optimizer_config(name).betas)  # 3 for AdEMAMix: its slow EMA
    with pytest.raises(
        UserError,
        match=rf"optimizer={name}: betas must be a list of {length} numbers, got \[0\.9\]",
    ):
        check(f"optimizer={name}", "optimizer.betas=[0.9]")  # fmt: skip


def test_torch_itself_fails_on_one_beta_with_an_index_error():
    with pytest.raises(IndexError):
        torch.optim.Adam([torch.zeros(2, requires_grad=True)], betas=(0.9,))
    with pytest.raises(UserError, match="adamw_betas must be a list of 2 numbers"):
        check("optimizer=muon", "optimizer.adamw_betas=[0.9]")


def test_an_optimizer_added_to_the_registry_is_checked_with_no_list_of_its_keys():
    added = OptimizerInfo("adabelief", "AdaBelief", "pytorch_optimizer.AdaBelief", "2 x params")
    cfg = OmegaConf.create({"name": "adabelief"})
    check_keys(added, cfg, {"lr": 1e-3, "betas": (0.9, 0.999), "rectify": True})
    with pytest.raises(UserError, match="optimizer=adabelief: unknown keys amsgard, not_a_key"):
        check_keys(added, cfg, {"lr": 1e-3, "amsgard": True, "not_a_key": 1})


def test_the_cli_exits_2_with_one_line_for_a_swallowed_key(tmp_path):
    out = subprocess.run(
        ["optbench", "train", *FAST, "optimizer=lamb", "+optimizer.amsgrad=true"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "optimizer=lamb: unknown key amsgrad" in out.stderr
    assert not (tmp_path / "outputs").exists()
