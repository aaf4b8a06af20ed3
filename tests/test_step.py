"""The shared optimizer step: gradient accumulation and clipping do what they claim."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from optbench.run.nonfinite import DeferredGuard
from optbench.run.step import NonFiniteStep, TrainStep
from optbench.run.sync import HOST_READS
from optbench.tasks.classification import Classification


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 5))


def batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 2, 2, generator=g), torch.randint(5, (n,), generator=g)


def sgd_step(model: nn.Module, micro_batches, **step_kwargs):
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    task = Classification(step_kwargs.pop("label_smoothing", 0.0))
    return TrainStep(model, optimizer, task, device=torch.device("cpu"), **step_kwargs)(
        micro_batches
    )


@pytest.mark.parametrize("sizes", [[8, 8, 8, 8], [8, 8, 4]])
def test_accumulated_micro_batches_equal_one_big_batch(sizes):
    micro = [batch(n, seed) for seed, n in enumerate(sizes)]
    big = (torch.cat([x for x, _ in micro]), torch.cat([y for _, y in micro]))
    accumulated, single = mlp(), mlp()
    r_acc = sgd_step(accumulated, micro)
    r_one = sgd_step(single, [big])
    for a, b in zip(accumulated.parameters(), single.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert r_acc.loss.item() == pytest.approx(r_one.loss.item(), abs=1e-6)
    assert r_acc.samples == r_one.samples == sum(sizes)


def raw_gradient(model: nn.Module, micro) -> list[torch.Tensor]:
    model = copy.deepcopy(model)
    x, y = micro[0]
    nn.functional.cross_entropy(model(x), y).backward()
    return [p.grad.clone() for p in model.parameters()]


def applied_gradient(before: nn.Module, after: nn.Module) -> list[torch.Tensor]:
    """With SGD at lr 1 and no momentum, the update is minus the (clipped) gradient."""
    return [(b - a).detach() for b, a in zip(before.parameters(), after.parameters(), strict=True)]


def total_norm(tensors: list[torch.Tensor]) -> float:
    return torch.linalg.vector_norm(torch.stack([t.norm() for t in tensors])).item()


def test_clip_by_norm_rescales_to_the_limit_and_records_both_norms():
    model, micro = mlp(), [batch(16, 1)]
    before, grads = copy.deepcopy(model), raw_gradient(model, micro)
    raw = total_norm(grads)
    limit = raw / 4
    result = sgd_step(model, micro, clip_mode="norm", clip_max=limit)
    applied = applied_gradient(before, model)
    for g, a in zip(grads, applied, strict=True):
        torch.testing.assert_close(a, g * limit / (raw + 1e-6), rtol=1e-4, atol=1e-6)
    assert result.grad_norm.item() == pytest.approx(raw, rel=1e-5)
    assert result.clipped_grad_norm.item() == pytest.approx(limit, rel=1e-4)
    assert total_norm(applied) == pytest.approx(limit, rel=1e-4)


def test_clip_by_norm_leaves_small_gradients_alone():
    model, micro = mlp(), [batch(16, 1)]
    raw = total_norm(raw_gradient(model, micro))
    result = sgd_step(model, micro, clip_mode="norm", clip_max=raw * 10)
    assert result.clipped_grad_norm.item() == pytest.approx(raw, rel=1e-5)


def test_clip_by_value_clamps_each_element():
    model, micro = mlp(), [batch(16, 2)]
    before, grads = copy.deepcopy(model), raw_gradient(model, micro)
    limit = 0.5 * max(g.abs().max().item() for g in grads)
    result = sgd_step(model, micro, clip_mode="value", clip_max=limit)
    applied = applied_gradient(before, model)
    clamped = [g.clamp(-limit, limit) for g in grads]
    for c, a in zip(clamped, applied, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-6)
    assert result.grad_norm.item() == pytest.approx(total_norm(grads), rel=1e-5)
    assert result.clipped_grad_norm.item() == pytest.approx(total_norm(clamped), rel=1e-5)
    assert result.clipped_grad_norm.item() < result.grad_norm.item()


def test_a_nan_loss_raises_before_the_optimizer_steps():
    model = mlp()
    before = copy.deepcopy(model)
    x, y = batch(4, 3)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteStep) as raised:
        sgd_step(model, [(x, y)])
    assert raised.value.bad_params  # names the parameters with non-finite gradients
    for a, b in zip(model.parameters(), before.parameters(), strict=True):
        assert torch.equal(a, b)


def guarded_step(policy: str, with_norm: bool = True):
    """A deferred-check step (as on CUDA) over an MLP with batch norm, trained with AdamW."""
    torch.manual_seed(0)
    layers = [nn.Flatten(), nn.Linear(12, 16), nn.BatchNorm1d(16) if with_norm else nn.Identity(),
              nn.Tanh(), nn.Linear(16, 5)]  # fmt: skip
    model = nn.Sequential(*layers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    guard = DeferredGuard(model, optimizer, torch.device("cpu"), stop_on_first=policy == "stop")
    return TrainStep(model, optimizer, Classification(), device=torch.device("cpu"), guard=guard)


def state(step: TrainStep) -> list[torch.Tensor]:
    tensors = [*step.model.state_dict().values()]
    for entry in step.optimizer.state.values():
        tensors += [v.clone() for v in entry.values()]
    return [t.clone() for t in tensors]


def poisoned(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = batch(8, seed)
    images[0, 0, 0, 0] = float("nan")
    return images, labels


@pytest.mark.parametrize("bad_step", [1, 2, 5])
@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_a_nan_at_any_step_leaves_weights_buffers_and_state_as_before_it(bad_step, policy):
    step = guarded_step(policy)
    for i in range(bad_step):
        step([batch(8, i)], i)
    before = state(step)
    result = step([poisoned(bad_step)], bad_step)  # no exception: the guard keeps it out
    assert result.kept.item() == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, state(step), strict=True))
    step([batch(8, 99)], bad_step + 1)
    after_next = state(step)
    moved = not all(torch.equal(a, b) for a, b in zip(before, after_next, strict=True))
    assert moved == (policy == "skip")  # stop: nothing after the first bad step is kept
    report = step.guard.report()
    assert report.first_bad_step == bad_step and report.skipped == 1  # non-finite steps
    assert math.isnan(report.first_bad_loss)


def test_the_guarded_step_equals_the_checked_step_when_nothing_goes_wrong():
    guarded, checked = guarded_step("stop"), guarded_step("stop")
    checked.guard = None
    for i in range(4):
        guarded([batch(8, i)], i)
        checked([batch(8, i)], i)
    assert all(torch.equal(a, b) for a, b in zip(state(guarded), state(checked), strict=True))


def test_a_guarded_step_makes_no_host_device_sync_in_steady_state():
    step = guarded_step("stop")
    step([batch(8, 0)], 0)  # the first step creates the optimizer state: checked on the host
    reads = HOST_READS[0]
    for i in range(1, 6):
        step([batch(8, i)], i)
    assert HOST_READS[0] == reads
    checked = guarded_step("stop")
    checked.guard = None
    checked([batch(8, 0)], 0)
    reads = HOST_READS[0]
    checked([batch(8, 1)], 1)
    assert HOST_READS[0] == reads + 1  # the host-checked step: one sync, counted the same way
