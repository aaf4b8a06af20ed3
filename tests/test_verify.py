"""`optbench verify`: hand-written optimizers, imported by path from a package in a temporary
folder, are equal to torch's when they are the textbook rule and named by their mistake when
they are not; bad input is one line and exit 2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from optbench.commands.verify import run_verify
from optbench.errors import UserError
from optbench.optim.verify import Setup, fixed_batches, make_network

PACKAGE = "handwritten_optimizers"

# The chapter's optimizers, written as a reader would: a plain loop over parameter groups.
# The wrong ones differ from the right ones by one mistake each.
SOURCE = '''
import torch


class SGDMomentum(torch.optim.Optimizer):
    def __init__(self, params, lr=0.01, momentum=0.9, weight_decay=0.0, nesterov=False):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad + group["weight_decay"] * p
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                v = state["momentum_buffer"]
                v.mul_(group["momentum"]).add_(g)
                d = g + group["momentum"] * v if group["nesterov"] else v
                p.sub_(group["lr"] * d)


class EMAMomentum(SGDMomentum):
    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b = group["momentum"]
            for p in group["params"]:
                g = p.grad + group["weight_decay"] * p
                v = self.state[p].setdefault("v", torch.zeros_like(p))
                v.mul_(b).add_((1 - b) * g)
                p.sub_(group["lr"] * v)


class EMAFromGradient(SGDMomentum):
    """EMA momentum whose buffer starts at the first gradient, as torch's does."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b = group["momentum"]
            for p in group["params"]:
                g = p.grad + group["weight_decay"] * p
                state = self.state[p]
                if "v" not in state:
                    state["v"] = g.clone()
                else:
                    state["v"].mul_(b).add_((1 - b) * g)
                p.sub_(group["lr"] * state["v"])


class VelocitySGD(SGDMomentum):
    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad + group["weight_decay"] * p
                v = self.state[p].setdefault("velocity", torch.zeros_like(p))
                v.mul_(group["momentum"]).sub_(group["lr"] * g)
                p.add_(v)


class Adam(torch.optim.Optimizer):
    decoupled = False
    bias_correction = True
    eps_inside = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if self.decoupled:
                    p.mul_(1 - lr * wd)
                else:
                    g = g + wd * p
                state = self.state[p]
                if not state:
                    state["t"], state["m"], state["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                state["t"] += 1
                t = state["t"]
                state["m"] = b1 * state["m"] + (1 - b1) * g
                state["v"] = b2 * state["v"] + (1 - b2) * g * g
                m_hat, v_hat = state["m"], state["v"]
                if self.bias_correction:
                    m_hat, v_hat = m_hat / (1 - b1**t), v_hat / (1 - b2**t)
                if self.eps_inside:
                    p -= lr * m_hat / torch.sqrt(v_hat + eps)
                else:
                    p -= lr * m_hat / (torch.sqrt(v_hat) + eps)


class AdamW(Adam):
    decoupled = True


class AdamNoBiasCorrection(Adam):
    bias_correction = False


class AdamEpsInside(Adam):
    eps_inside = True


class AdamWWithL2(Adam):
    """Called AdamW, but its weight decay is added to the gradient."""


class RMSprop(torch.optim.Optimizer):
    eps_inside = False

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            a, eps, mu = group["alpha"], group["eps"], group["momentum"]
            for p in group["params"]:
                g = p.grad + group["weight_decay"] * p
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.zeros_like(p)
                    state["grad_avg"] = torch.zeros_like(p)
                    state["momentum_buffer"] = torch.zeros_like(p)
                s = state["square_avg"] = a * state["square_avg"] + (1 - a) * g * g
                if group["centered"]:
                    m = state["grad_avg"] = a * state["grad_avg"] + (1 - a) * g
                    s = s - m * m
                r = torch.sqrt(s + eps) if self.eps_inside else torch.sqrt(s) + eps
                if mu > 0:
                    buf = state["momentum_buffer"] = mu * state["momentum_buffer"] + g / r
                    p -= group["lr"] * buf
                else:
                    p -= group["lr"] * g / r


class RMSpropEpsInside(RMSprop):
    eps_inside = True


class PlainMomentum(torch.optim.Optimizer):
    def __init__(self, params, lr, momentum=0.9):
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                v = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                v.mul_(group["momentum"]).add_(p.grad)
                p.sub_(group["lr"] * v)


class Broken(SGDMomentum):
    @torch.no_grad()
    def step(self, closure=None):
        raise RuntimeError("forgot to write step")


class NeedsFoo(SGDMomentum):
    def __init__(self, params, lr, foo):
        super().__init__(params, lr)


def not_an_optimizer(params):
    return params
'''


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("verify")
    (root / PACKAGE).mkdir()
    (root / PACKAGE / "__init__.py").write_text("")
    (root / PACKAGE / "opt.py").write_text(SOURCE)
    return root


@pytest.fixture
def verify(package_dir, monkeypatch, capsys):
    """Run `optbench verify ARGS` in-process from the package's folder, as the CLI does:
    (exit code, stdout, stderr)."""
    monkeypatch.chdir(package_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors this small only lose time to a second thread

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = run_verify(list(args))
        except UserError as err:
            print(f"optbench verify: error: {err}", file=sys.stderr)
            code = 2
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    torch.set_num_threads(threads)


def target(name: str) -> str:
    return f"{PACKAGE}.opt.{name}"


def table_rows(out: str) -> list[str]:
    """The per-step rows of the table: those that start with a step number."""
    return [line for line in out.splitlines() if line.strip()[:1].isdigit()]


EQUAL_CASES = [
    ("SGDMomentum", "momentum", ""),
    ("SGDMomentum", "nesterov", "--groups 2 --schedule cosine weight_decay=0.01"),
    ("Adam", "adam", "--groups 2 --schedule cosine weight_decay=0.01"),
    ("AdamW", "adamw", "--groups 2 --schedule step weight_decay=0.1 lr=0.01"),
    ("RMSprop", "rmsprop", ""),
    (
        "RMSprop",
        "rmsprop",
        "--groups 2 --schedule cosine weight_decay=0.01 momentum=0.9 centered=true alpha=0.9",
    ),
]


@pytest.mark.parametrize(("cls", "name", "args"), EQUAL_CASES)
def test_the_textbook_rules_equal_torch_in_both_dtypes(verify, cls, name, args):
    code, out, err = verify(target(cls), "--against", name, *args.split())
    assert (code, err) == (0, "")
    assert "tolerance, per tensor: max |diff| <= atol + rtol x max |library|, with\n" in out
    assert "  float64 rtol 1e-10 atol 1e-12; float32 rtol 1e-05 atol 1e-06\n" in out
    assert "float64: equal at every step" in out
    assert "float32: equal at every step" in out
    assert "verdict: EQUAL" in out
    # Every step row is there (20 steps: the first 3 and the last), each difference tiny.
    rows = [row.split() for row in table_rows(out)]
    assert [int(r[0]) for r in rows] == [1, 2, 3, 20]
    assert all(float(r[1]) < 1e-12 and float(r[3]) < 1e-6 for r in rows)
    assert all(len(line) < 100 for line in out.splitlines())


def test_the_network_covers_4d_2d_and_1d_tensors_and_the_batches_are_fixed():
    shapes = {p.dim() for p in make_network(torch.float64, 0).parameters()}
    assert shapes == {1, 2, 4}
    a, b = fixed_batches(3, torch.float32, 0), fixed_batches(3, torch.float32, 0)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a, b, strict=True))
    assert Setup().steps == 20


# (class, optimizer, arguments, the step where the weights part, the diagnosis)
WRONG_CASES = [
    (
        "EMAMomentum", "momentum", ("--schedule", "cosine"), 1,
        "matches torch.optim.SGD at lr x 0.1 (EMA momentum: v = b v + (1 - b) g)",
    ),
    (
        "EMAFromGradient", "momentum", (), 2,
        "matches torch.optim.SGD with dampening=0.9\n    (EMA momentum started at the gradient",
    ),
    (
        "VelocitySGD", "momentum", ("--schedule", "cosine"), 2,  # the first LR change
        "matches SGD in velocity form: v = mu v - lr g; p += v",
    ),
    (
        "AdamNoBiasCorrection", "adam", (), 1,
        "matches Adam without bias correction: p -= lr m / (sqrt(v) + eps)",
    ),
    (
        "AdamEpsInside", "adam", ("weight_decay=0.01",), 1,
        "matches Adam with eps inside the square root: p -= lr m_hat / sqrt(v_hat + eps)",
    ),
    (
        "AdamWWithL2", "adamw", ("weight_decay=0.1",), 1,
        "matches torch.optim.Adam (L2 instead of decoupled weight decay: g = g + wd p)",
    ),
    (
        "RMSpropEpsInside", "rmsprop", (), 1,
        "matches RMSprop with eps inside the square root: p -= lr g / sqrt(s + eps)",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("cls", "name", "args", "parts_at", "diagnosis"), WRONG_CASES)
def test_a_known_mistake_differs_and_is_named(verify, cls, name, args, parts_at, diagnosis):
    code, out, err = verify(target(cls), "--against", name, *args)
    assert (code, err) == (1, "")
    rows = {int(r[0]): float(r[1]) for r in map(str.split, table_rows(out))}
    assert rows[parts_at] > 1e-6 and all(rows[s] < 1e-12 for s in rows if s < parts_at)
    assert "verdict: DIFFERENT" in out
    # One mistake, one variant: exactly the one that describes it.
    assert out.count("  matches ") == 1 and f"  {diagnosis}" in out
    assert all(len(line) < 100 for line in out.splitlines())


def test_ema_momentum_is_torch_at_a_smaller_lr_not_torch_with_dampening(verify):
    """The closed form in variants.py, against torch itself: an EMA buffer is torch's buffer
    times (1 - b) at every step, while dampening=b differs from it by b^t g_1."""
    b, lr = 0.9, 0.1
    gen = torch.Generator().manual_seed(0)
    g = [torch.randn(5, dtype=torch.float64, generator=gen) for _ in range(6)]
    ema, torch_buf, damp = torch.zeros(5, dtype=torch.float64), None, None
    for t, g_t in enumerate(g, start=1):
        ema = b * ema + (1 - b) * g_t
        torch_buf = g_t.clone() if torch_buf is None else b * torch_buf + g_t
        damp = g_t.clone() if damp is None else b * damp + (1 - b) * g_t
        assert torch.allclose(lr * ema, lr * (1 - b) * torch_buf, rtol=1e-13, atol=0)
        assert torch.allclose(damp - ema, b**t * g[0], rtol=1e-12, atol=1e-15)
    # The same with torch.optim.SGD's own steps, through verify: no LR x (1 - b) match for
    # the EMA that starts at the gradient.
    code, out, _ = verify(target("EMAFromGradient"), "--against", "momentum")
    assert code == 1 and "EMA momentum:" not in out


def test_against_optbench_reference_rule_and_one_dtype(verify):
    code, out, _ = verify(
        target("SGDMomentum"), "--against", "nesterov", "--impl", "reference", "--dtype", "float64"
    )
    assert code == 0
    assert "library:  optbench.optim.reference.sgd.SGD (optbench's nesterov, impl=reference)" in out
    assert "float32" not in out and "verdict: EQUAL in float64\n" in out


def test_state_is_paired_by_name_or_by_closeness_and_says_which(verify):
    _, out, _ = verify(target("SGDMomentum"), "--against", "momentum")
    assert "momentum_buffer ~ momentum_buffer (by name)" in out
    _, out, _ = verify(target("Adam"), "--against", "adam")
    assert "exp_avg ~ m (closest at step 1), exp_avg_sq ~ v (closest at step 1)" in out


def test_a_long_run_shows_the_first_steps_the_partings_and_the_last(verify):
    code, out, _ = verify(
        target("VelocitySGD"), "--against", "momentum", "--schedule", "step", "--steps", "40"
    )
    assert code == 1
    # Its state (v = -lr x torch's buffer) parts at once, its weights when the LR drops.
    assert (
        "float64: parts at step 1 on out.bias "
        "[momentum_buffer ~ velocity], |diff| 3.0e-01\n"
        "  (the state parts first: the weights part at step 21)\n" in out
    )
    assert out.count("the weights part at step 21)\n") == 2  # float64 and float32
    assert [r.split()[0] for r in table_rows(out)] == ["1", "2", "3", "21", "40"]
    assert "matches SGD in velocity form" in out
    assert "    (equal to torch.optim.SGD at a constant LR, not under a schedule)" in out
    assert all(len(line) < 100 for line in out.splitlines())


def test_the_registrys_fixed_settings_reach_the_users_class(verify):
    code, out, _ = verify(target("SGDMomentum"), "--against", "sgd")
    assert code == 0
    assert "settings: momentum=0.0 lr=0.05 weight_decay=0.0005" in out


def test_a_documented_key_the_class_lacks_is_left_out_of_both(verify):
    code, out, _ = verify(target("PlainMomentum"), "--against", "momentum")
    assert code == 0
    assert "settings: lr=0.1 momentum=0.9\n" in out
    assert "note: PlainMomentum takes no weight_decay: left out of both" in out
    # nesterov is what `nesterov` is: torch keeps it, and the class's heavy ball is named.
    code, out, _ = verify(target("PlainMomentum"), "--against", "nesterov")
    assert code == 1
    assert "torch.optim.SGD keeps nesterov=True" in out
    assert "  matches torch.optim.SGD with nesterov=False (Nesterov left out" in out


def one_line_refusal(verify, *args: str, needle: str) -> None:
    before = sorted(Path.cwd().iterdir())
    code, out, err = verify(*args)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and needle in err, err
    assert "Traceback" not in err
    assert sorted(Path.cwd().iterdir()) == before  # nothing written


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((f"{PACKAGE}.missing.Adam", "--against", "adam"), "no module named"),
        ((f"{PACKAGE}.opt.Nope", "--against", "adam"), "has no attribute 'Nope'"),
        ((target("not_an_optimizer"), "--against", "adam"), "(it is the function"),
        ((f"{PACKAGE}.opt", "--against", "adam"), "(it is a module)"),
        ((target("Adam"), "--against", "adam", "amsgrad=true"), "takes no 'amsgrad'"),
        ((target("Adam"), "--against", "adma"), "unknown optimizer 'adma'"),
        ((target("Adam"), "--against", "adam", "--steps", "0"), "--steps must be in 1.."),
        ((target("Adam"), "--against", "adam", "--dtype", "float16"), "--dtype takes"),
        ((target("Adam"), "adam"), "--against"),
        ((target("Adam"), "--against", "adam", "lr"), "settings are key=value"),
        ((target("Adam"), "--against", "adam", "lr=-1"), "lr"),
        ((target("NeedsFoo"), "--against", "momentum"), "needs foo"),
        ((target("Broken"), "--against", "momentum"), "RuntimeError: forgot to write step"),
        ((target("Adam"), "--against", "muon"), "not one optimizer class"),
        ((target("Adam"), "--against", "nadam", "--impl", "reference"), "no reference"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(verify, args, needle):
    one_line_refusal(verify, *args, needle=needle)


def test_a_failing_step_names_the_users_file_and_line(verify):
    code, _, err = verify(target("Broken"), "--against", "momentum")
    assert code == 2
    assert f"{PACKAGE}/opt.py:" in err and "step() raised at step 1 (float64)" in err
