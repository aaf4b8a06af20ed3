"""What produced a run: the code's git commit, the versions and the machine."""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import optbench


def git_commit(path: Path) -> dict[str, Any]:
    """The commit of the git checkout holding `path` and whether it had local changes."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(path), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model with the number of threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                threads = torch.get_num_threads()
                return f"{line.split(':', 1)[1].strip()} ({threads} thread{'s' * (threads > 1)})"
    return platform.processor() or "CPU"


def run_info(device: torch.device, processes: int = 1) -> dict[str, Any]:
    """Where and how the run was started (`device` is rank 0's of `processes` DDP ranks)."""
    return {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "optbench": optbench.__version__,
        "git": git_commit(Path(optbench.__file__).parent),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "device_name": device_name(device),
        "processes": processes,
        "host": platform.node(),
    }
