"""One optimizer step: the piece of training that `optbench train` and `optbench lr-find` share.

A step runs one or more micro-batches (gradient accumulation) under autocast, scales the
backward pass for fp16, unscales, measures and clips the gradient, and steps the optimizer
unless a value is not finite. It makes exactly one host-device sync, to decide that.
Under DDP the gradients are averaged over the ranks once per step (`no_sync` before the last
micro-batch) and the logged sums once more, so every rank decides the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from optbench.data import Batch
from optbench.distributed import sum_over_ranks
from optbench.optim.hessian import HutchinsonHessian
from optbench.run.nonfinite import DeferredGuard
from optbench.run.sync import to_host
from optbench.tasks import Task

AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class StepResult:
    loss: torch.Tensor  # mean training objective over the step's samples (on the device)
    sums: dict[str, torch.Tensor]  # the task's metric sums over the step's samples (on the device)
    samples: int
    grad_norm: torch.Tensor  # total gradient norm before clipping
    clipped_grad_norm: torch.Tensor  # ... and after
    scaler_skipped: bool = (
        False  # fp16 overflow: GradScaler skipped the update and lowered its scale
    )
    kept: torch.Tensor | None = None  # deferred check: 1 if the update was kept, 0 if not

    def counted(self) -> tuple[dict[str, torch.Tensor], torch.Tensor | float, torch.Tensor | float]:
        """Sums, samples and gradient norm as the epoch's means count them: nothing of a
        step whose update the deferred check discarded (its values are NaN)."""
        if self.kept is None:
            return self.sums, float(self.samples), self.grad_norm
        keep = self.kept.bool()
        zero = torch.zeros((), device=self.kept.device)
        masked = {k: torch.where(keep, v, zero) for k, v in self.sums.items()}
        return masked, self.kept * self.samples, torch.where(keep, self.grad_norm, zero)


class NonFiniteStep(Exception):
    """The loss or a gradient was NaN/Inf; the optimizer has not been stepped."""

    def __init__(self, loss: float, bad_params: list[str]):
        self.loss = loss
        self.bad_params = bad_params
        names = ", ".join(bad_params[:5]) + (
            f" and {len(bad_params) - 5} more" if len(bad_params) > 5 else ""
        )
        super().__init__(f"loss {loss}, non-finite gradients in {names or 'no parameter'}")


class TrainStep:
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        task: Task,
        *,
        device: torch.device,
        amp: str = "none",
        clip_mode: str = "none",
        clip_max: float = 1.0,
        hessian: HutchinsonHessian | None = None,
        schedule_free: bool = False,
        guard: DeferredGuard | None = None,
        ddp: DistributedDataParallel | None = None,
        eval_model: nn.Module | None = None,
    ):
        self.model = model  # what trains: the model, DDP-wrapped and compiled as configured
        self.ddp = ddp
        self.eval_model = eval_model or (model if ddp is None else ddp.module)  # no collectives
        self.ranks = 1 if ddp is None else torch.distributed.get_world_size()
        self.optimizer = optimizer
        self.task = task
        self.device = device
        self.amp = amp
        self.clip_mode = clip_mode
        self.clip_max = clip_max
        self.hessian = hessian  # estimates for second-order optimizers (Sophia)
        self.schedule_free = schedule_free  # evaluate at the optimizer's averaged weights
        self.guard = guard  # None: each step checks on the host
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
        groups = optimizer.param_groups
        self.params = [p for group in groups for p in group["params"]]
        self.param_names: list[str] = []
        for i, group in enumerate(groups):
            unnamed = [f"group{i}.param{j}" for j in range(len(group["params"]))]
            self.param_names += group.get("param_names") or unnamed

    def autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device.type, dtype=AMP_DTYPES.get(self.amp), enabled=self.amp != "none"
        )

    def __call__(self, micro_batches: Sequence[Batch], step: int = 0) -> StepResult:
        """Accumulate gradients over `micro_batches` and take optimizer step number `step`."""
        samples = sum(len(targets) for _, targets in micro_batches)
        deferred = self.guard is not None and self.guard.ready
        if deferred:
            self.guard.begin()
        loss_sum = torch.zeros((), device=self.device)
        sums: dict[str, torch.Tensor] = {}
        hessian = None
        hessian_due = self._hessian_due(step)
        self.optimizer.zero_grad(set_to_none=True)
        for i, (inputs, targets) in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            with self._gradient_sync(last and not hessian_due):
                with self.autocast():
                    outputs = self.model(inputs)
                    loss = self.task.loss(outputs, targets)
                # Weight each micro-batch by its share of the step's samples: the same gradient
                # as one big batch, also when the last micro-batch is short.
                share = len(targets) / samples
                if last and hessian_due:
                    hessian = self._backward_with_hessian(loss, share)
                else:
                    self.scaler.scale(loss * share).backward()
            loss_sum += loss.detach() * len(targets)
            with torch.no_grad():
                for key, value in self.task.sums(outputs.detach(), targets).items():
                    sums[key] = sums[key] + value if key in sums else value
        if self.ranks > 1:
            loss_sum, sums, samples = self._sum_over_ranks(loss_sum, sums, samples, hessian)
        self.scaler.unscale_(self.optimizer)
        grad_norm, clipped_norm = self._clip()
        mean_loss = loss_sum / samples
        result = StepResult(mean_loss, sums, samples, grad_norm, clipped_norm)
        finite = torch.isfinite(mean_loss) & torch.isfinite(grad_norm)
        kwargs = {"hessian": hessian} if hessian is not None else {}
        if deferred:  # the guard keeps a non-finite update out, on the device
            self.optimizer.step(**kwargs)
            self.guard.end(finite, mean_loss, step)
            result.kept = finite.float()
            return result
        # The step's one host-device sync: a non-finite update must never reach the weights.
        if not to_host(finite):
            if not (self.scaler.is_enabled() and torch.isfinite(mean_loss)):
                raise NonFiniteStep(mean_loss.item(), self.nonfinite_params())
            result.scaler_skipped = True
        self.scaler.step(self.optimizer, **kwargs)
        self.scaler.update()
        if self.guard is not None:
            self.guard.ready = True  # the optimizer state exists now
        return result

    def _gradient_sync(self, sync: bool) -> nullcontext | object:
        """DDP's all-reduce runs in the backward pass of `sync` micro-batches only."""
        return self.ddp.no_sync() if self.ddp is not None and not sync else nullcontext()

    def _sum_over_ranks(
        self, loss_sum: torch.Tensor, sums: dict[str, torch.Tensor], samples: int,
        hessian: list[torch.Tensor] | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:  # fmt: skip
        """The step's loss and metric sums over all ranks (each saw an equal share). A
        Hessian step ran without DDP's all-reduce (autograd.grad bypasses it): its gradients
        and estimates are averaged here, so every rank's Sophia sees the same."""
        if hessian is not None:
            for t in [p.grad for p in self.params] + list(hessian):
                if t is not None:
                    sum_over_ranks(t).div_(self.ranks)
        packed = sum_over_ranks(torch.stack([loss_sum, *(v.float() for v in sums.values())]))
        return packed[0], dict(zip(sums, packed[1:], strict=True)), samples * self.ranks

    def _hessian_due(self, step: int) -> bool:
        if self.hessian is None:
            return False
        # The optimizer's own step count, when it keeps one, so skipped steps cannot desync it.
        return self.hessian.due(self.optimizer.param_groups[0].get("step", step))

    def _backward_with_hessian(self, loss: torch.Tensor, share: float) -> list[torch.Tensor]:
        """Backward pass that keeps the gradient's graph for a Hessian estimate, then drops it.

        autograd.grad rather than backward(create_graph=True), which would tie each parameter
        to its gradient in a reference cycle.
        """
        grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
        hessian = self.hessian.estimate(self.params, list(grads))
        for p, g in zip(self.params, grads, strict=True):
            if g is not None:
                p.grad = g.detach() * share if p.grad is None else p.grad + g.detach() * share
        return hessian  # of the last micro-batch's mean loss: an estimate for the whole step

    def _clip(self) -> tuple[torch.Tensor, torch.Tensor]:
        grads = [p.grad for p in self.params if p.grad is not None]
        if self.clip_mode == "norm":
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip_max)
            # clip_grad_norm_ scales by max / (norm + 1e-6) when that is below 1.
            return norm, norm * torch.clamp(self.clip_max / (norm + 1e-6), max=1.0)
        norm = torch.nn.utils.get_total_norm(grads)
        if self.clip_mode == "value":
            torch.nn.utils.clip_grad_value_(self.params, self.clip_max)
            return norm, torch.nn.utils.get_total_norm(grads)
        return norm, norm

    def nonfinite_params(self) -> list[str]:
        """Names of the parameters whose gradient holds a NaN or Inf (diagnosis only: syncs)."""
        return [
            name
            for name, p in zip(self.param_names, self.params, strict=True)
            if p.grad is not None and not torch.isfinite(p.grad).all()
        ]
