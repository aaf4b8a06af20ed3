"""Run by tests/test_distributed.py under torchrun: train each run of a spec on this rank.

Each rank also saves its own final weights (rank 0 alone writes the run directory), so the
test can check that the ranks agree and that they match a single process. At the end each
rank leaves its process group as it does at exit (`distributed.leave`) and writes the names
of the threads it still has: gloo's workers must be gone before the interpreter finalizes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from helpers import compose_config

from optbench import distributed
from optbench.train.trainer import Training, train


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    world = distributed.init()
    finish = Training.finish

    def finish_and_save_weights(self: Training, *args: object) -> object:
        name = self.run_dir.name
        torch.save(
            self.run.model.state_dict(), Path(spec["weights"]) / f"{name}.rank{world.rank}.pt"
        )
        return finish(self, *args)

    Training.finish = finish_and_save_weights
    for name, overrides in spec["runs"].items():
        train(compose_config(*overrides), Path(spec["root"]) / name)
    distributed.leave()
    tasks = Path("/proc/self/task")  # Linux: one folder per thread, with its name
    if tasks.is_dir():
        threads = [(task / "comm").read_text().strip() for task in tasks.iterdir()]
        (Path(spec["weights"]) / f"threads.rank{world.rank}.json").write_text(json.dumps(threads))


if __name__ == "__main__":
    main(sys.argv[1])
