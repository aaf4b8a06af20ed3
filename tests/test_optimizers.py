"""The whole optimizer zoo: every optimizer learns, survives a checkpoint, builds from the CLI."""

from __future__ import annotations

import copy
import io
import json
import subprocess

import pytest
import torch
from conftest import FAST
from helpers import compose_config
from omegaconf import OmegaConf

from optbench.commands.optimizers import markdown
from optbench.errors import UserError
from optbench.optim import OPTIMIZERS, optimizer_config
from optbench.run import build_run
from optbench.run.evaluate import evaluate
from optbench.train.preflight import check_train_config
from optbench.train.trainer import train

# A hidden layer between the first and the last, so Muon has a matrix of its own.
ZOO = [*(o for o in FAST if not o.startswith("model.hidden")), "model.hidden=[64,64]"]
# Matrix preconditioners cost d^3 per dimension: the zoo's 3072-wide input takes SOAP and Kron
# 10-30 s per 20 steps on 2 cores, and Shampoo (an SVD per dimension per step) minutes. In these
# tests that dimension gets Kron's diagonal factor and SOAP's identity basis (Adam), the 64-wide
# dimensions keep their full factors; Shampoo trains on 3x8x8 images (a 192-wide input).
WIDE_INPUT = {
    "soap": ["optimizer.max_precondition_dim=1024"],
    "kron": ["optimizer.max_size_triangular=1024"],
    "shampoo": ["dataset.shape=[3,8,8]"],
}


def setup_for(name: str, *overrides: str):
    cfg = compose_config(*ZOO, f"optimizer={name}", *WIDE_INPUT.get(name, []), *overrides)
    return build_run(cfg)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_reduces_the_loss_with_its_documented_defaults(name):
    setup = setup_for(name)
    batch = next(setup.data.train_batches.epoch(0))
    losses = [setup.step([batch], i).loss.item() for i in range(20)]
    assert losses[-1] < 0.95 * losses[0], losses


def through_bytes(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # as checkpoints are loaded: no code from the file


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_continues_identically_after_a_state_dict_round_trip(name):
    first = setup_for(name)
    batches = list(first.data.train_batches.epoch(0))
    for i in range(3):
        first.step([batches[i]], i)
    model_state, optimizer_state = (
        through_bytes(first.model.state_dict()),
        through_bytes(first.optimizer.state_dict()),
    )
    second = setup_for(name)
    second.model.load_state_dict(model_state)
    second.optimizer.load_state_dict(optimizer_state)
    for setup in (first, second):
        torch.manual_seed(7)  # Sophia's Hessian probes are random
        for i in range(3, 6):
            setup.step([batches[i]], i)
    for (key, a), b in zip(
        first.model.state_dict().items(), second.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), key


@pytest.mark.slow
def test_every_optimizer_builds_and_trains_from_the_cli(tmp_path):
    names = ",".join(OPTIMIZERS)
    # 3x8x8 images: a 192-wide input keeps the matrix preconditioners' first steps short.
    out = subprocess.run(
        ["optbench", "train", "-m", *ZOO, "dataset.train_size=128", "dataset.test_size=64", "trainer.epochs=1",
         "dataset.shape=[3,8,8]",
         f"optimizer={names}", f"paths.output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    results = [json.loads(p.read_text()) for p in tmp_path.glob("multirun/*/*/*/results.json")]
    assert sorted(r["optimizer"] for r in results) == sorted(OPTIMIZERS)
    assert all(r["status"] == "completed" for r in results)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["optimizer=lion", "optimizer.betas=[1.5,0.9]"],
            "betas must be a list of numbers in [0, 1)",
        ),
        (["optimizer=lamb", "optimizer.lr=-1"], "lr must be a positive number or auto, got -1"),
        (["optimizer=rmsprop", "optimizer.momentum=1.0"], "momentum must be in [0, 1)"),
        (["optimizer=lookahead", "optimizer.base=sophia"], "lookahead cannot wrap sophia"),
        (["optimizer=lookahead", "optimizer.k=0"], "k must be an integer >= 1"),
        (["optimizer=adafactor", "optimizer.eps=[null,-1]"], "eps must be positive"),
        (["optimizer=radam", "optimizer.impl=reference"], "has no reference implementation"),
        (["optimizer=muon", "optimizer.ns_steps=0"], "optimizer=muon"),
        (["optimizer=torch_muon", "optimizer.adjust_lr_fn=spectral"], "optimizer=torch_muon"),
        (["optimizer=adam_mini", "optimizer.eps=-1"], "eps must be positive"),
    ],
)
def test_bad_hyperparameters_are_one_line_user_errors(overrides, message):
    with pytest.raises(
        UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    ):
        check_train_config(compose_config(*ZOO, *overrides))


def test_a_bad_hyperparameter_exits_2_from_the_cli(tmp_path):
    out = subprocess.run(["optbench", "train", *ZOO, "optimizer=lion", "optimizer.betas=[0.9,1.2]"],
                         capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert (
        out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "betas" in out.stderr
    )


def test_eight_bit_adam_really_keeps_8_bit_state_on_cpu():
    setup = setup_for("adam8bit")
    setup.step([next(setup.data.train_batches.epoch(0))], 0)
    big = max(
        (p for g in setup.optimizer.param_groups for p in g["params"]), key=torch.Tensor.numel
    )
    state = setup.optimizer.state[big]
    assert (
        big.numel() >= 4096
        and state["state1"].dtype == torch.uint8
        and state["state2"].dtype == torch.uint8
    )


def test_muon_is_a_hybrid_with_groups_named_in_the_logs():
    not_model = [o for o in ZOO if not o.startswith("model")]
    cfg = compose_config(*not_model, "model=fastcnn", "model.widths=[4,8,8]", "optimizer=muon")
    setup = build_run(cfg)
    groups = {g["name"]: g for g in setup.optimizer.param_groups}
    muon = [n for name, g in groups.items() if g["use_muon"] for n in g["param_names"]]
    adamw = [n for name, g in groups.items() if not g["use_muon"] for n in g["param_names"]]
    assert all(name.startswith("muon/") == groups[name]["use_muon"] for name in groups)
    assert "group1.conv1.weight" in muon  # a 4-D conv kernel, orthogonalised as a matrix
    assert "stem.0.weight" in adamw and "head.2.weight" in adamw  # first layer and head: AdamW
    assert all(setup.model.get_parameter(n).ndim >= 2 for n in muon)
    setup.step([next(setup.data.train_batches.epoch(0))], 0)  # and it steps


def test_sophia_gets_its_hessian_estimates_from_the_trainer():
    setup = setup_for("sophia", "optimizer.update_period=2")
    batches = setup.data.train_batches.epoch(0)
    setup.step([next(batches)], 0)
    estimates = [setup.optimizer.state[p]["hessian"].clone() for p in setup.step.params]
    setup.step([next(batches)], 1)  # not due: the estimate is kept
    assert all(
        torch.equal(e, setup.optimizer.state[p]["hessian"])
        for e, p in zip(estimates, setup.step.params, strict=True)
    )
    setup.step([next(batches)], 2)  # due again: a fresh estimate
    assert not torch.equal(estimates[0], setup.optimizer.state[setup.step.params[0]]["hessian"])


def test_schedule_free_evaluates_at_its_averaged_weights_and_trains_on():
    setup = setup_for("schedule_free")
    batches = setup.data.train_batches.epoch(0)
    for i in range(5):
        setup.step([next(batches)], i)
    before = [p.clone() for p in setup.model.parameters()]
    held_out = {"val": setup.data.val_batches}
    at_average = evaluate(setup.step, held_out, setup.data.train_batches)
    # Back at the training point y, up to the rounding of Schedule-Free's own y -> x -> y interpolation.
    for a, b in zip(before, setup.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    setup.step.schedule_free = False  # the same evaluation at the training point y
    at_training_point = evaluate(setup.step, held_out)
    assert at_average["val_loss"] != at_training_point["val_loss"]


def test_lookahead_takes_its_bases_documented_defaults():
    setup = setup_for("lookahead", "optimizer.base=sgd")
    assert [g["lr"] for g in setup.optimizer.param_groups] == [
        0.05,
        0.05,
    ]  # configs/optimizer/sgd.yaml
    assert type(setup.optimizer.optimizer).__name__ == "SGD"


def test_lookahead_with_a_peaked_schedule_uses_the_bases_lr(tmp_path):
    # lookahead's lr: null means "the base's": schedules and logs must see that LR too.
    cfg = compose_config(
        *ZOO,
        "optimizer=lookahead",
        "scheduler=onecycle",
        "scheduler.max_lr=0.5",
        "trainer.epochs=1",
    )
    check_train_config(cfg)
    results = train(cfg, tmp_path)
    assert results["status"] == "completed"
    assert (
        OmegaConf.load(tmp_path / "config.yaml").optimizer.lr == 1e-3
    )  # configs/optimizer/adamw.yaml


def test_the_optimizer_table_lists_every_optimizer():
    table = markdown()
    assert all(f"| {name} |" in table for name in OPTIMIZERS)
    assert "| adam | torch.optim.Adam | 2 x params | yes | 0.001 |" in table


def test_torch_muon_is_torchs_muon_and_adamw_side_by_side():
    # The independent answer: torch.optim.Muon and torch.optim.AdamW built by hand over a copy
    # of the model, split as documented, stepped one after the other.
    setup = setup_for("torch_muon", "optimizer.weight_decay=0.01", "optimizer.adamw_wd=0.01")
    groups = setup.optimizer.param_groups
    assert [g["name"] for g in groups] == ["muon/decay", "adamw/decay", "adamw/no_decay"]
    assert groups[0]["param_names"] == ["3.weight"]  # the hidden 64 x 64 matrix
    twin = copy.deepcopy(setup.model)
    params = dict(twin.named_parameters())
    muon = torch.optim.Muon([params["3.weight"]], lr=0.02, weight_decay=0.01, momentum=0.95)
    adamw = torch.optim.AdamW(
        [{"params": [params[n] for n in g["param_names"]], "weight_decay": g["weight_decay"]}
         for g in groups[1:]],
        lr=1e-3, betas=(0.9, 0.95), eps=1e-10,
    )  # fmt: skip
    for i, (x, y) in enumerate(list(setup.data.train_batches.epoch(0))[:3]):
        setup.step([(x, y)], i)
        twin.zero_grad()
        setup.step.task.loss(twin(x), y).backward()
        muon.step()
        adamw.step()
    for (name, a), b in zip(
        setup.model.state_dict().items(), twin.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_torch_muon_leaves_conv_kernels_to_adamw():
    not_model = [o for o in ZOO if not o.startswith("model")]
    cfg = compose_config(
        *not_model, "model=fastcnn", "model.widths=[4,8,8]", "optimizer=torch_muon"
    )
    setup = build_run(cfg)
    kernels = [n for g in setup.optimizer.param_groups for n in g["param_names"]
               if setup.model.get_parameter(n).ndim == 4]  # fmt: skip
    adamw = {n for g in setup.optimizer.param_groups if not g["use_muon"] for n in g["param_names"]}
    assert kernels and set(kernels) <= adamw  # torch.optim.Muon raises for 4-D parameters
    setup.step([next(setup.data.train_batches.epoch(0))], 0)


def test_adam_mini_keeps_one_second_moment_per_tensor_and_optbenchs_group_settings():
    setup = setup_for("adam_mini", "param_groups.lr_multipliers={5:10}")
    setup.step([next(setup.data.train_batches.epoch(0))], 0)
    for group in setup.optimizer.param_groups:
        (p,) = group["params"]
        head, bias = group["name"].startswith("5."), p.ndim == 1
        assert group["lr"] == pytest.approx(1e-2 if head else 1e-3)
        assert group["weight_decay"] == (0.0 if bias else 0.1)
        assert setup.optimizer.state[p]["v_mean"].numel() == 1


def test_the_cautious_variants_mask_the_step():
    # The second step (the first has no momentum to disagree with): Lion moves every weight with
    # a gradient (all but those of dead ReLU units); C-Lion also leaves those whose step
    # disagrees with the new gradient where they are.
    unmoved = []
    for name in ("lion", "clion"):
        setup = setup_for(name, "optimizer.weight_decay=0")
        first, second = list(setup.data.train_batches.epoch(0))[:2]
        setup.step([first], 0)
        before = [p.clone() for p in setup.model.parameters()]
        setup.step([second], 1)
        pairs = zip(setup.model.parameters(), before, strict=True)
        unmoved.append(sum(int((p == b).sum()) for p, b in pairs))
    assert unmoved[1] > 10 * unmoved[0]  # measured: 6215 vs 125 of 201k weights


def test_self_tuning_optimizers_are_marked_and_keep_lr_1():
    self_tuning = [name for name, info in OPTIMIZERS.items() if info.self_tuning]
    assert self_tuning == ["prodigy", "dadapt_adam"]
    assert all(optimizer_config(name).lr == 1.0 for name in self_tuning)
