"""airbench94's pieces as ordinary switches: the whitening stem, frozen batch-norm scales,
Dirac init, test-time augmentation and alternating flips."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import FAST
from helpers import compose_config

from optbench.data import DatasetInfo, DeviceBatches, ImageSplit
from optbench.errors import UserError
from optbench.models import build_model
from optbench.models.airbench import WHITENING_EPS, Airbench94, whitening_filters
from optbench.optim import build_optimizer
from optbench.run import build_run
from optbench.run.evaluate import evaluate_batches
from optbench.train import checkpoint
from optbench.train.preflight import check_train_config
from optbench.train.trainer import train

AIRBENCH = [*(o for o in FAST if not o.startswith("model")), "model=airbench94",
            "model.widths=[8,16,16]"]  # fmt: skip


def correlated_images(n: int = 200) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    smooth = F.interpolate(torch.randn(n, 3, 8, 8, generator=g), size=16, mode="bilinear")
    return smooth + 0.1 * torch.randn(n, 3, 16, 16, generator=g)


def test_the_whitening_filters_whiten_the_patch_covariance():
    images = correlated_images()
    flat = F.unfold(images, kernel_size=2).transpose(1, 2).reshape(-1, 12).double()
    covariance = flat.T @ flat / len(flat)
    filters = whitening_filters(images, (2, 2)).flatten(1).double()
    # unfold orders a patch channel-major, as the filters' (c, h, w) flattening does.
    whitened = filters @ covariance @ filters.T
    values = torch.linalg.eigvalsh(covariance).flip(0)
    torch.testing.assert_close(whitened, torch.diag(values / (values + WHITENING_EPS)),
                               atol=1e-4, rtol=1e-4)  # fmt: skip
    assert values[0] / values[-1] > 10  # the patches were far from white to begin with


def test_airbench_freezes_its_stem_and_batch_norm_scales_and_starts_convs_at_identity():
    model = Airbench94(3, 10, (8, 16, 16))
    model.initialize(correlated_images())
    filters = whitening_filters(correlated_images(), (2, 2))
    assert torch.equal(model.whiten.weight, torch.cat([filters, -filters]))
    assert not model.whiten.weight.requires_grad and model.whiten.bias.requires_grad
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(
        m.momentum == pytest.approx(0.4) and not m.weight.requires_grad for m in norms
    )
    conv = model.group2.conv2  # 16 -> 16 channels
    centre = conv.weight[:, :, 1, 1]
    assert torch.equal(torch.diagonal(centre), torch.ones(16))
    assert torch.count_nonzero(conv.weight[:16]) == 16  # nothing but the identity


def airbench_sgd(model: torch.nn.Module, batch_size: int) -> torch.optim.SGD:
    """airbench94.py's optimizer, written out: its groups, its per-1,024-image LR and decay."""
    momentum = 0.85
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    lr, wd = 11.5 / kilostep_scale, 0.0153 * batch_size / kilostep_scale
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    norm_biases = [p for n, p in named if "norm" in n]
    other = [p for n, p in named if "norm" not in n]
    groups = [dict(params=norm_biases, lr=64 * lr, weight_decay=wd / (64 * lr)),
              dict(params=other, lr=lr, weight_decay=wd / lr)]  # fmt: skip
    return torch.optim.SGD(groups, momentum=momentum, nesterov=True)


def test_the_presets_lr_parametrisation_takes_airbenchs_steps():
    """Mean loss with the preset's LR, decay and groups == airbench's summed loss and groups,
    at airbench's batch of 1,024 (the preset's LR is per 1,024 images, as airbench's is)."""
    cfg = compose_config("+experiment=airbench94", "trainer.device=cpu")
    torch.manual_seed(0)
    ours = Airbench94(3, 10, (8, 16, 16))
    ours.initialize(correlated_images())
    theirs = copy.deepcopy(ours)
    optimizer = build_optimizer(ours, cfg.optimizer, cfg.param_groups, torch.device("cpu"))
    reference = airbench_sgd(theirs, batch_size=1024)
    assert {g["name"] for g in optimizer.param_groups} == {"decay", "norm/decay"}
    for _ in range(4):
        images, labels = torch.randn(1024, 3, 16, 16), torch.randint(0, 10, (1024,))
        for model, opt, reduction in ((ours, optimizer, "mean"), (theirs, reference, "sum")):
            loss = F.cross_entropy(model(images), labels, label_smoothing=0.2, reduction=reduction)
            opt.zero_grad()
            loss.backward()
            opt.step()
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


class AirbenchMuon(torch.optim.Optimizer):
    """airbench94_muon.py's Muon, written out: weight-normalised filters, NS5 in bfloat16."""

    def __init__(self, params, lr, momentum):
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(p.grad)
                g = p.grad.add(buf, alpha=group["momentum"])
                p.data.mul_(len(p.data) ** 0.5 / p.data.norm())
                x = g.reshape(len(g), -1).bfloat16()
                x /= x.norm() + 1e-7
                if g.size(0) > x.size(1):
                    x = x.T
                for _ in range(3):
                    a = x @ x.T
                    x = 3.4445 * x + (-4.7750 * a + 2.0315 * a @ a) @ x
                if g.size(0) > x.size(0):
                    x = x.T
                p.data.add_(x.view(g.shape), alpha=-group["lr"])


def airbench_muon_optimizers(
    model: Airbench94, batch_size: int, lr_scale: float = 1.0
) -> list[torch.optim.Optimizer]:
    """airbench94_muon.py's optimizers, written out: its groups, its summed-loss SGD LRs and
    decay (x `lr_scale`: a mean loss needs LR x batch), its Muon."""
    bias_lr, head_lr, wd = 0.053 * lr_scale, 0.67 * lr_scale, 2e-6 * batch_size
    filters = [p for p in model.parameters() if p.ndim == 4 and p.requires_grad]
    norm_biases = [p for n, p in model.named_parameters() if "norm" in n and p.requires_grad]
    groups = [dict(params=[model.whiten.bias], lr=bias_lr, weight_decay=wd / bias_lr),
              dict(params=norm_biases, lr=bias_lr, weight_decay=wd / bias_lr),
              dict(params=[model.head[-1].weight], lr=head_lr, weight_decay=wd / head_lr)]  # fmt: skip
    sgd = torch.optim.SGD(groups, momentum=0.85, nesterov=True)
    return [sgd, AirbenchMuon(filters, lr=0.24, momentum=0.6)]


def muon_preset_pair() -> tuple[Airbench94, torch.optim.Optimizer, Airbench94]:
    """A small airbench94 with the muon preset's optimizer, and an identical copy."""
    cfg = compose_config("+experiment=airbench94_muon", "trainer.device=cpu")
    torch.manual_seed(0)
    ours = Airbench94(3, 10, (8, 16, 16), logit_divisor=16, head_std=1.0)
    assert ours.head[-1].weight.std().item() == pytest.approx(1.0)
    ours.initialize(correlated_images())
    optimizer = build_optimizer(ours, cfg.optimizer, cfg.param_groups, torch.device("cpu"))
    assert sorted(g["name"] for g in optimizer.param_groups) == [
        "muon/decay", "sgd/decay", "sgd/head/decay"]  # fmt: skip
    return ours, optimizer, copy.deepcopy(ours)


def train_both(pairs: list, steps: int) -> None:
    for _ in range(steps):
        images, labels = torch.randn(2000, 3, 16, 16), torch.randint(0, 10, (2000,))
        for model, opts, reduction in pairs:
            loss = F.cross_entropy(model(images), labels, label_smoothing=0.2, reduction=reduction)
            model.zero_grad()
            loss.backward()
            for opt in opts:
                opt.step()


def test_the_muon_presets_optimizer_takes_airbench94_muons_steps():
    """The preset's muon_sgd, LRs, decay and groups at a mean loss == airbench94_muon's
    optimizers: over 3 steps bit for bit with its SGD LRs converted to a mean loss (x 2,000),
    and in one step at its own summed loss, up to the rounding of bfloat16 Newton-Schulz."""
    ours, optimizer, theirs = muon_preset_pair()
    start = copy.deepcopy(ours.state_dict())
    train_both([(ours, [optimizer], "mean"),
                (theirs, airbench_muon_optimizers(theirs, 2000, lr_scale=2000), "mean")], 3)  # fmt: skip
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b), name
        assert not a.requires_grad or not torch.equal(a, start[name]), name  # it trained

    ours, optimizer, theirs = muon_preset_pair()
    train_both([(ours, [optimizer], "mean"),
                (theirs, airbench_muon_optimizers(theirs, 2000), "sum")], 1)  # fmt: skip
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        if a.ndim == 4:  # Muon: bf16 rounding of its input, carried through 3 bf16 iterations:
            # a few ulps (2^-7 near 1) of an update of size ~1, times lr 0.24
            torch.testing.assert_close(a, b, rtol=0, atol=0.24 * 2**-5, msg=name)
        else:  # SGD: float32 rounding between a summed and a mean gradient, times LR 106
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5, msg=name)


def test_a_run_whitens_from_its_own_training_images_and_keeps_the_stem_frozen(tmp_path):
    cfg = compose_config(*AIRBENCH, "trainer.epochs=1")
    run = build_run(cfg)
    expected = whitening_filters(run.data.train_batches.first_images(5000), (2, 2))
    assert torch.allclose(run.model.whiten.weight[: len(expected)], expected)
    results = train(cfg, tmp_path)
    assert results["status"] == "completed"
    trained = checkpoint.load_latest(tmp_path)[1]["model"]
    assert torch.equal(trained["stem.0.weight"], run.model.whiten.weight)


def test_the_whitening_bias_trains_for_its_epochs_then_freezes(tmp_path):
    cfg = compose_config(*AIRBENCH, "trainer.epochs=3", "model.whiten_bias_epochs=1",
                         "trainer.keep_checkpoints=3")  # fmt: skip
    initial = build_run(cfg).model.whiten.bias.detach().clone()
    assert torch.count_nonzero(initial) == 0  # airbench starts it at zero
    train(cfg, tmp_path)
    oldest_first = reversed(checkpoint.list_checkpoints(tmp_path))
    biases = [checkpoint.load_checkpoint(p)["model"]["stem.0.bias"] for p in oldest_first]
    assert len(biases) == 3 and not torch.equal(biases[0], initial)  # trained in epoch 1
    assert torch.equal(biases[0], biases[1]) and torch.equal(biases[1], biases[2])  # then frozen


@pytest.mark.parametrize("mode", ["mirror", "mirror_translate"])
def test_tta_scores_the_mean_of_the_models_outputs_over_the_views(mode):
    run = build_run(compose_config(*AIRBENCH))
    run.model.eval()
    batch = next(iter(run.data.test_batches.epoch(0)))
    images, labels = batch
    views = [images, images.flip(-1)]
    if mode == "mirror_translate":
        padded = [F.pad(v, (1, 1, 1, 1), mode="reflect") for v in views]
        views += [p[..., :-2, :-2] for p in padded] + [p[..., 2:, 2:] for p in padded]
    with torch.no_grad():
        mean = torch.stack([run.model(v) for v in views]).mean(dim=0)
    by_hand = {"loss": F.cross_entropy(mean, labels).item(),
               "acc": (mean.argmax(1) == labels).float().mean().item()}  # fmt: skip
    got = evaluate_batches(run.step, [batch], mode)
    assert got == pytest.approx(by_hand, rel=1e-5)
    assert got != pytest.approx(evaluate_batches(run.step, [batch]), rel=1e-9)


def asymmetric_split(n: int = 16) -> ImageSplit:
    images = torch.arange(n * 2 * 4, dtype=torch.uint8).view(n, 1, 2, 4)
    return ImageSplit(images, torch.zeros(n, dtype=torch.long))


def epoch_images(epoch: int, seed: int = 0) -> torch.Tensor:
    batches = DeviceBatches(asymmetric_split(), batch_size=16, device=torch.device("cpu"),
                            mean=(0.0,), std=(1 / 255,), flip="alternate", seed=seed)  # fmt: skip
    return next(iter(batches.epoch(epoch)))[0]


def test_alternating_flips_invert_every_image_every_other_epoch_deterministically():
    first, second, third = epoch_images(0), epoch_images(1), epoch_images(2)
    assert torch.equal(second, first.flip(-1))
    assert torch.equal(third, first) and torch.equal(epoch_images(0), first)
    flipped = (
        (first != torch.arange(16 * 8, dtype=torch.float32).view(16, 1, 2, 4)).flatten(1).any(1)
    )
    assert 0 < flipped.sum() < 16  # each image has its own coin
    assert not torch.equal(epoch_images(0, seed=1), first)


def test_tta_on_text_and_an_unknown_flip_mode_are_user_errors():
    with pytest.raises(UserError, match=r"trainer\.tta=mirror augments images"):
        check_train_config(compose_config("dataset=markov", "model=gpt", "trainer.tta=mirror"))
    with pytest.raises(UserError, match=r"dataset\.augment\.flip must be true, false or alternate"):
        check_train_config(compose_config(*FAST, "dataset.augment.flip=sometimes"))
    assert isinstance(build_model(compose_config("model=airbench94").model,
                                  DatasetInfo((3, 32, 32), 10, 1, 1)), Airbench94)  # fmt: skip
