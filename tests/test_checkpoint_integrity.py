"""Checkpoint integrity: every corrupt file is one UserError naming it, never a payload, and
`load_latest` falls back past it to the newest good checkpoint."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from optbench.errors import UserError
from optbench.run.rng import rng_state
from optbench.train import checkpoint


def real_payload(seed: int) -> dict:
    """What the trainer saves, in miniature: model and optimizer states, RNG, config text."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 8)).sum().backward()
    optimizer.step()
    return {
        "config": f"optimizer:\n  name: adamw\nseed: {seed}\n",
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(),
        "state": {"epoch": 1, "step": 8 + seed},
    }


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def with_header(body: bytes) -> bytes:
    """`body` under a correct digest: what passes the checksum must still be a checkpoint."""
    return checkpoint.HEADER + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def corrupt_variants(good: bytes) -> dict[str, bytes]:
    """Many ways a checkpoint file goes bad: cut, flipped, foreign, empty, random."""
    rng = np.random.default_rng(0)
    variants = {"empty": b"", "text": b"epoch: 3\nloss: 0.25\n", "one newline": b"\n"}
    variants["yaml text of a config"] = b"optimizer:\n  name: adamw\n  lr: 0.001\n" * 50
    for n in (1, 10, 100, 10_000):
        variants[f"random {n} bytes"] = rng.bytes(n)
    cuts = {1, 10, len(checkpoint.HEADER), len(checkpoint.HEADER) + 64, 200, len(good) // 2}
    for cut in sorted(cuts | {len(good) - 1}):
        variants[f"first {cut} bytes"] = good[:cut]
    variants["last half"] = good[len(good) // 2 :]
    variants["one extra byte"] = good + b"\0"
    for i, at in enumerate(rng.integers(0, len(good), 40)):
        flipped = bytearray(good)
        flipped[at] ^= 1 << int(rng.integers(8))
        variants[f"bit flip {i} at byte {at}"] = bytes(flipped)
    for i in range(5):
        flipped = bytearray(good)
        for at in rng.choice(len(good), 20, replace=False):
            flipped[at] = (flipped[at] + int(rng.integers(1, 256))) % 256
        variants[f"20 random bytes changed, {i}"] = bytes(flipped)
    payload = real_payload(0)
    variants["plain torch file of a checkpoint (format 1)"] = torch_bytes({"format": 1, **payload})
    variants["plain torch file of a state dict"] = torch_bytes(payload["model"])
    variants["a pickle"] = pickle.dumps({"format": 2, "model": {}})
    variants["intact header, a tensor inside"] = with_header(torch_bytes(torch.zeros(3)))
    variants["intact header, a list inside"] = with_header(torch_bytes([1, 2, 3]))
    variants["intact header, format 1 inside"] = with_header(torch_bytes({"format": 1, **payload}))
    variants["intact header, text inside"] = with_header(b"not a torch file")
    variants["intact header, a pickle inside"] = with_header(
        pickle.dumps({"format": 2}, protocol=2)
    )
    return variants


def good_bytes(tmp_path) -> bytes:
    return checkpoint.save_checkpoint(tmp_path / "source", 0, real_payload(0), keep=1).read_bytes()


def test_a_checkpoint_round_trips_exactly(tmp_path):
    payload = real_payload(3)
    path = checkpoint.save_checkpoint(tmp_path, 5, payload, keep=1)
    assert same(checkpoint.load_checkpoint(path), {"format": checkpoint.FORMAT_VERSION, **payload})


def test_every_corrupt_file_is_one_line_naming_it_and_auto_falls_back(tmp_path):
    run = tmp_path / "run"
    good_payload = real_payload(1)
    older = checkpoint.save_checkpoint(run, 1, good_payload, keep=10)
    newest = checkpoint.checkpoint_path(run, 2)
    variants = corrupt_variants(good_bytes(tmp_path))
    assert len(variants) > 60
    for name, data in variants.items():
        newest.write_bytes(data)
        with pytest.raises(UserError) as caught:
            checkpoint.load_checkpoint(newest)
        message = str(caught.value)
        assert len(message.splitlines()) == 1 and str(newest) in message, (name, message)
        path, payload = checkpoint.load_latest(run)
        assert path == older and same(payload["model"], good_payload["model"]), name


def test_every_flipped_byte_of_real_checkpoints_is_caught(tmp_path):
    """The digest covers every byte: no single changed byte anywhere loads."""
    rng = np.random.default_rng(1)
    for seed in range(10):
        path = checkpoint.save_checkpoint(tmp_path / str(seed), seed, real_payload(seed), keep=1)
        good = path.read_bytes()
        for at in [*rng.integers(0, len(good), 20), 0, len(checkpoint.HEADER), len(good) - 1]:
            flipped = bytearray(good)
            flipped[at] ^= 0xFF
            path.write_bytes(bytes(flipped))
            with pytest.raises(UserError, match=r"corrupt or truncated|not an optbench"):
                checkpoint.load_checkpoint(path)


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_correct_digest_does_not_make_loading_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    path.write_bytes(
        with_header(torch_bytes({"format": checkpoint.FORMAT_VERSION, "x": RunsCode()}))
    )
    with pytest.raises(UserError, match="cannot be read safely"):
        checkpoint.load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_all_corrupt_is_one_line_error(tmp_path):
    checkpoint.save_checkpoint(tmp_path, 1, real_payload(0), keep=2)
    checkpoint.list_checkpoints(tmp_path)[0].write_text("hello")
    with pytest.raises(UserError, match=r"no readable checkpoint .*: all 1 are corrupt"):
        checkpoint.load_latest(tmp_path)


def test_a_write_killed_before_its_rename_leaves_nothing_that_counts(tmp_path):
    """A real process killed mid-write: its temporary file is no checkpoint, and the next
    save (or `remove_partial_writes` at start) deletes it."""
    script = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from optbench.train import checkpoint

        def stuck_replace(src, dst):  # the bytes are on disk; die before the rename
            print("written", flush=True)
            sys.stdin.read()

        os.replace = stuck_replace
        checkpoint.save_checkpoint(Path({str(tmp_path)!r}), 7, {{"w": list(range(100))}}, keep=3)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline() == "written\n"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    folder = tmp_path / checkpoint.FOLDER
    (leftover,) = folder.iterdir()
    assert leftover.name.startswith(".step-000000007.pt.") and leftover.stat().st_size > 0
    assert checkpoint.list_checkpoints(tmp_path) == []
    assert checkpoint.remove_partial_writes(tmp_path) == [leftover] and not leftover.exists()

    (folder / leftover.name).write_bytes(b"left by another killed write")
    kept = [
        checkpoint.save_checkpoint(tmp_path, step, real_payload(step), keep=2) for step in (1, 2, 3)
    ]
    assert sorted(folder.iterdir()) == kept[1:]  # two complete checkpoints, nothing else
