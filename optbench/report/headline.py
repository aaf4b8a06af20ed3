"""The metric a report ranks runs by: each run's main validation metric, as its results.json
names it (`metric`, `higher_is_better`), so a language model's loss is compared as a
classifier's accuracy is, the right way up."""

from __future__ import annotations

from dataclasses import dataclass

from optbench.tracking.results import best_key, final_key


@dataclass(frozen=True)
class Headline:
    metric: str = "test_acc"
    higher_is_better: bool = True

    @property
    def final(self) -> str:
        return final_key(self.metric)

    @property
    def best(self) -> str:
        return best_key(self.metric)

    @property
    def percent(self) -> bool:
        return self.metric.endswith("_acc")

    def label(self, which: str) -> str:
        """`final val acc %`, `best val loss`: a column's header."""
        words = self.metric.replace("_", " ")
        return f"{which} {words}" + (" %" if self.percent else "")

    @property
    def shown(self) -> tuple[str, float]:
        """Format and scale of its values: accuracies in %."""
        return (".2f", 100.0) if self.percent else (".4f", 1.0)

    def reaches(self, value: float, target: float) -> bool:
        return value >= target if self.higher_is_better else value <= target

    def best_of(self, values: list[float]) -> float | None:
        return (max if self.higher_is_better else min)(values, default=None)
