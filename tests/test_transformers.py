"""The transformer workloads: a ViT and a GPT, their parameter groups, the text data, the
language-model task against its entropy floor, and exact resume."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess

import numpy as np
import pytest
import torch
from helpers import compose_config, read_jsonl
from omegaconf import OmegaConf
from torch import nn

from optbench.data import DatasetInfo
from optbench.data.text import TokenWindows, decode, encode, markov_chain
from optbench.models import build_model
from optbench.optim import build_optimizer, parameter_groups
from optbench.run import build_run
from optbench.run.step import TrainStep
from optbench.train import checkpoint
from optbench.train.trainer import train

NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm)
VIT = ["model=vit", "model.dim=32", "model.depth=3", "model.heads=4"]
# A chain of 8 tokens a one-block GPT learns in two short epochs.
MARKOV = ["dataset=markov", "dataset.vocab_size=8", "dataset.length=60000", "dataset.block_size=16",
          "model=gpt", "model.dim=32", "model.depth=1", "model.heads=2", "optimizer=adamw",
          "optimizer.lr=0.01", "scheduler=cosine", "trainer.batch_size=32", "trainer.device=cpu",
          "trainer.progress=false"]  # fmt: skip


def vit() -> nn.Module:
    return build_model(compose_config(*VIT).model, DatasetInfo((3, 32, 32), 10, 1, 1))


def gpt(tied: bool = True) -> nn.Module:
    cfg = compose_config("model=gpt", f"model.tied={tied}").model
    return build_model(cfg, DatasetInfo((16,), 64, 1, 1))


def by_name(groups):
    return {n: g for g in groups for n in g["param_names"]}


def test_vit_decays_only_matrices_and_never_its_position_embedding_or_class_token():
    groups = by_name(parameter_groups(vit(), weight_decay=0.05))
    no_decay = {n for n, g in groups.items() if g["weight_decay"] == 0}
    shapes = dict(vit().named_parameters())
    assert {"pos_embed", "cls_token"} <= no_decay
    assert {n for n, p in shapes.items() if p.ndim <= 1} <= no_decay
    assert no_decay == {n for n, p in shapes.items() if p.ndim <= 1} | {"pos_embed", "cls_token"}


def test_layer_decay_goes_by_block_index():
    groups = by_name(parameter_groups(vit(), weight_decay=0.0, layer_decay=0.5))
    layers = 3 + 2  # embeddings, three blocks, norm + head
    assert groups["head.weight"]["lr_scale"] == 1.0
    for block in range(3):
        expected = 0.5 ** (layers - 1 - (block + 1))
        assert groups[f"blocks.{block}.attn.qkv.weight"]["lr_scale"] == pytest.approx(expected)
    for name in ("patch_embed.weight", "pos_embed", "cls_token"):
        assert groups[name]["lr_scale"] == pytest.approx(0.5 ** (layers - 1))


@pytest.mark.parametrize("name", ["vit", "gpt"])
def test_muon_takes_the_blocks_matrices_and_adamw_the_rest(name):
    model = vit() if name == "vit" else gpt()
    cfg = compose_config("optimizer=muon").optimizer
    optimizer = build_optimizer(model, cfg, compose_config().param_groups, torch.device("cpu"))
    on_muon = {n for g in optimizer.param_groups if g["use_muon"] for n in g["param_names"]}
    expected = {n for n, p in model.named_parameters() if n.startswith("blocks.") and p.ndim == 2}
    assert on_muon == expected and expected


def test_a_tied_gpt_head_is_one_parameter_in_one_group():
    for tied in (True, False):
        model = gpt(tied)
        groups = parameter_groups(model, weight_decay=0.1)
        grouped = [p for g in groups for p in g["params"]]
        assert len(grouped) == len({id(p) for p in model.parameters()})
        assert ("lm_head.weight" in by_name(groups)) is not tied


@pytest.mark.parametrize(("model", "shape"), [("resnet18", (3, 32, 32)), ("fastcnn", (3, 32, 32)),
                                              ("mlp", (1, 28, 28))])  # fmt: skip
def test_the_cnns_and_the_mlp_keep_their_groups(model, shape):
    """timm's rule (1-D tensors) gives exactly the bias-and-norm rule these models had."""
    net = build_model(compose_config(f"model={model}").model, DatasetInfo(shape, 10, 1, 1))
    old = {f"{m}.{p}".lstrip(".") for m, module in net.named_modules()
           for p, _ in module.named_parameters(recurse=False)
           if p.endswith("bias") or isinstance(module, NORMS)}  # fmt: skip
    groups = by_name(parameter_groups(net, weight_decay=5e-4))
    assert {n for n, g in groups.items() if g["weight_decay"] == 0} == old


def test_the_byte_tokenizer_round_trips_any_text():
    text = "To be, or not to be: that is the question.\nÜber naïve café — 東京 🙂"
    tokens = encode(text)
    assert tokens.dtype == torch.uint8 and len(tokens) == len(text.encode("utf-8"))
    assert decode(tokens) == text


def windows(seed: int = 0, **kwargs) -> TokenWindows:
    tokens = torch.arange(1000) % 251
    return TokenWindows(tokens.to(torch.uint8), block_size=8, batch_size=4, device=torch.device("cpu"),
                        windows=20, shuffle=True, seed=seed, **kwargs)  # fmt: skip


def test_windows_are_a_pure_function_of_seed_and_epoch_and_resume_mid_epoch():
    first, again = list(windows().epoch(3)), list(windows().epoch(3))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    resumed = list(windows().epoch(3, start_batch=2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first[2:], resumed, strict=True))
    assert not torch.equal(first[0][0], next(iter(windows().epoch(4)))[0])
    assert not torch.equal(first[0][0], next(iter(windows(seed=1).epoch(3)))[0])
    inputs, targets = first[0]
    assert torch.equal(inputs[:, 1:], targets[:, :-1])  # targets are the next tokens


def test_the_markov_chains_entropy_rate_is_its_sampled_texts_empirical_loss():
    cfg = compose_config(*MARKOV).dataset
    chain = markov_chain(cfg)
    tokens = chain.sample(50_000, seed=3).numpy()
    empirical = -np.log(chain.transitions[tokens[:-1], tokens[1:]]).mean()
    assert empirical == pytest.approx(chain.entropy_rate(), rel=0.02)
    assert chain.entropy_rate() < math.log(8) - 0.3  # well below a uniform guess


def test_a_gpt_trained_on_markov_text_gets_close_to_the_entropy_floor(tmp_path):
    cfg = compose_config(*MARKOV, "trainer.epochs=2")
    results = train(cfg, tmp_path)
    run = build_run(cfg)
    held_out = run.data.dataset.test.numpy().astype(np.int64)
    chain = markov_chain(cfg.dataset)
    # The best any model can do on these very tokens: the chain's own probabilities.
    oracle = -np.log(chain.transitions[held_out[:-1], held_out[1:]]).mean()
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert results["metric"] == "val_loss" and results["higher_is_better"] is False
    assert results["final_test_loss"] - oracle < 0.04  # nats per token
    assert records[-1]["test_bits_per_token"] == pytest.approx(
        results["final_test_loss"] / math.log(2)
    )
    assert records[-1]["test_perplexity"] == pytest.approx(math.exp(results["final_test_loss"]))


def test_a_gpt_stopped_mid_epoch_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    cfg = compose_config(
        *MARKOV, "trainer.epochs=2", "dataset.length=20000", "trainer.deterministic=true"
    )
    train(cfg, tmp_path / "whole")
    original, calls = TrainStep.__call__, []

    def interrupt_at_step_40(self, micro_batches, step=0):
        calls.append(step)
        if step == 40:  # epoch 2 of 35 steps each: mid-epoch
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, micro_batches, step)

    monkeypatch.setattr(TrainStep, "__call__", interrupt_at_step_40)
    with pytest.raises(SystemExit):
        train(cfg, tmp_path / "cut")
    monkeypatch.setattr(TrainStep, "__call__", original)
    resumed = OmegaConf.merge(cfg, {"trainer": {"resume": str(tmp_path / "cut")}})
    results = train(resumed, tmp_path / "elsewhere")
    assert results["status"] == "completed" and 40 in calls
    whole = checkpoint.load_latest(tmp_path / "whole")[1]["model"]
    cut = checkpoint.load_latest(tmp_path / "cut")[1]["model"]
    assert all(torch.equal(whole[k], cut[k]) for k in whole)


def cli(*args: str, cwd) -> subprocess.CompletedProcess:
    out = subprocess.run(["optbench", *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_lr_find_schedule_sweeps_and_the_report_work_on_both_workloads(tmp_path):
    small_lm = [*MARKOV, "dataset.length=6000", "trainer.epochs=2"]
    cli(
        "lr-find",
        *small_lm,
        "lr_find.num_iter=15",
        f"hydra.run.dir={tmp_path / 'find'}",
        cwd=tmp_path,
    )
    assert json.loads((tmp_path / "find" / "lr_find.json").read_text())["suggestions"]
    vit = ["dataset=synthetic", "dataset.train_size=256", *VIT, "scheduler=warmup_cosine",
           "param_groups.layer_decay=0.8", "trainer.device=cpu"]  # fmt: skip
    cli("schedule", *vit, f"hydra.run.dir={tmp_path / 'schedule'}", cwd=tmp_path)
    cli("schedule", *small_lm, f"hydra.run.dir={tmp_path / 'lm_schedule'}", cwd=tmp_path)
    cli(
        "lr-find",
        *vit,
        "lr_find.num_iter=10",
        f"hydra.run.dir={tmp_path / 'vit_find'}",
        cwd=tmp_path,
    )
    assert (tmp_path / "vit_find" / "lr_find.png").is_file()
    header = (tmp_path / "schedule" / "schedule.csv").read_text().splitlines()[0]
    assert "lr/depth0/decay" in header and "lr/depth4/decay" in header  # per-block groups
    sweep = tmp_path / "sweep"
    cli("train", "-m", *small_lm, "optimizer=adamw,lion", "trainer.seed=0,1",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    cli("report", str(sweep), "--out", str(tmp_path / "report"), cwd=tmp_path)
    with open(tmp_path / "report" / "report.csv") as f:
        rows = {row["method"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"optimizer=adamw", "optimizer=lion"}
    for row in rows.values():
        assert 0 < float(row["final_val_loss_mean"]) < math.log(8) and row["seeds"] == "2"
    assert (tmp_path / "report" / "val_loss.png").read_bytes().startswith(b"\x89PNG")
    # Lower is better: the default target is the best loss / 0.95, so some run reaches it.
    assert any(int(row["reached_target"]) > 0 for row in rows.values())
