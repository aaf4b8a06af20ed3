"""The TensorBoard HParams entry of a run: its settings, led by what its sweep varies, beside
its metrics, led by the main validation metric.

The HParams tab shows the settings and metrics that an experiment config declares, and of a
folder of runs it reads the experiment config of any one run (`_find_experiment_tag` in
tensorboard/plugins/hparams/backend_context.py); it ticks the first five settings marked
`differs` and the first five metrics. So every run of a sweep declares the same config: all
its settings, those the sweep varies marked `differs` with every value the sweep gives them,
read from the `multirun.yaml` that Hydra writes in the sweep folder before the first job
starts. A run outside a Hydra sweep (alone, or a search's trial) marks the settings studies
usually vary. The metrics are the run's own time series, which the tab reads at their last
point: no single-point copies are written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import struct_pb2
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from torch.utils.tensorboard import SummaryWriter
from yaml import YAMLError

from optbench.tracking.results import COMPLETED, DIVERGED
from optbench.tracking.scalar_layout import ScalarTags

# Each setting's HParams name and where the config holds it; a config group's choice is the
# `name` of its config.
SETTINGS = {
    "optimizer": "optimizer.name", "lr": "optimizer.lr",
    "weight_decay": "optimizer.weight_decay", "scheduler": "scheduler.name",
    "seed": "trainer.seed", "model": "model.name", "dataset": "dataset.name",
    "batch_size": "trainer.batch_size", "epochs": "trainer.epochs",
}  # fmt: skip
# Settings of a feature, declared only when it is on (the tab ticks five columns: none of them
# should go to `amp none` in every run); each with the value that means off.
FEATURES = {"accumulation": ("trainer.accumulation", 1), "amp": ("trainer.amp", "none")}
GROUPS = ("optimizer", "scheduler", "model", "dataset")
# Shown first for a run outside a Hydra sweep: what optimizer studies vary.
USUALLY_VARIED = ("optimizer", "lr", "weight_decay", "scheduler", "seed")
# Named in a trial's name outside a sweep.
TRIAL_KEYS = ("optimizer", "lr", "seed")
SESSION_STATUS = {COMPLETED: api_pb2.STATUS_SUCCESS, DIVERGED: api_pb2.STATUS_FAILURE}
# The totals beside the split metrics: the training time and the last epoch's throughput.
COSTS = ("epoch/train_time_s", "epoch/images_per_s")

Scalar = bool | int | float | str
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sweep:
    """What the Hydra sweep of a run varies: each setting's name and the values it takes
    (empty for an interval, which has no list), in the order of the sweep's overrides."""

    values: dict[str, list[Scalar]]

    @classmethod
    def of(cls, run_dir: Path) -> Sweep:
        """The sweep whose folder holds `run_dir` (none if it is not a sweep's job)."""

        def task_and_params(multirun: Any) -> list[str]:
            hydra = OmegaConf.to_container(multirun.hydra, resolve=False)
            params = hydra.get("sweeper", {}).get("params") or {}  # what presets declare
            return [*hydra["overrides"]["task"], *(f"{k}={v}" for k, v in params.items())]

        values = {}
        for override in _read_overrides(run_dir.parent / "multirun.yaml", task_and_params):
            if override.is_sweep_override():
                iterable = override.is_choice_sweep() or override.is_range_sweep()
                key = setting_name(override.key_or_group)
                values[key] = list(override.sweep_iterator()) if iterable else []
        return cls(values)


def setting_name(key: str) -> str:
    """A config key's HParams name: `optimizer.lr` -> `lr`; a key of no setting as it is."""
    by_path = {path: name for name, path in SETTINGS.items()}
    by_path |= {path: name for name, (path, _) in FEATURES.items()}
    return key if key in GROUPS else by_path.get(key, key)


def _scalar(value: Any) -> Scalar:
    if isinstance(value, bool | int | float | str):
        return value
    return str(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value)


def _job_overrides(run_dir: Path) -> dict[str, Any]:
    """The values a sweep's job was given (Hydra's `.hydra/overrides.yaml`), by setting name."""
    overrides = _read_overrides(run_dir / ".hydra" / "overrides.yaml", OmegaConf.to_container)
    return {setting_name(o.key_or_group): o.value() for o in overrides}


def _read_overrides(path: Path, lines_of: Callable[[Any], list[str]]) -> list[Override]:
    """The overrides in one of Hydra's files; none if it is absent or unreadable (the HParams
    entry then goes without them: the run's results must still be written)."""
    if not path.is_file():
        return []
    try:
        return OverridesParser.create().parse_overrides(lines_of(OmegaConf.load(path)))
    except (HydraException, OmegaConfBaseException, YAMLError, OSError, KeyError, TypeError) as err:
        log.warning("HParams: cannot read the overrides in %s (%s)", path, err)
        return []


def run_hparams(cfg: DictConfig, sweep: Sweep, run_dir: Path) -> dict[str, Scalar]:
    """The run's settings, and its value of every key its sweep varies, as HParams scalars."""
    clip = cfg.trainer.clip
    values = {name: OmegaConf.select(cfg, path) for name, path in SETTINGS.items()}
    for name, (path, off) in FEATURES.items():
        if (value := OmegaConf.select(cfg, path)) != off or name in sweep.values:
            values[name] = value
    if clip.mode != "none":
        values["clip"] = f"{clip.mode}:{clip.max}"
    own = _job_overrides(run_dir)
    for key in sweep.values:  # a key of no setting, or a choice the config does not keep
        values.setdefault(key, OmegaConf.select(cfg, key, default=own.get(key)))
    return {k: _scalar(v) for k, v in values.items() if v is not None}


def trial_name(hparams: dict[str, Scalar], sweep: Sweep, run_dir: Path) -> str:
    """What varied, then where the run is: `adamw lr=0.003 · tbsweep/1` (sweep job 1)."""

    def shown(key: str) -> str:
        value = hparams[key]
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        return text if key in GROUPS else f"{key}={text}"

    label = " ".join(shown(k) for k in (sweep.values or TRIAL_KEYS) if k in hparams)
    job = run_dir.name.partition("_")[0] if sweep.values else run_dir.name
    return f"{label} · {run_dir.parent.name}/{job}"


def _kind(value: Scalar) -> type:
    return bool if isinstance(value, bool) else str if isinstance(value, str) else float


def _value(value: Scalar) -> struct_pb2.Value:
    if isinstance(value, bool):
        return struct_pb2.Value(bool_value=value)
    if isinstance(value, str):
        return struct_pb2.Value(string_value=value)
    return struct_pb2.Value(number_value=value)


def hparam_infos(hparams: dict[str, Scalar], sweep: Sweep) -> list[api_pb2.HParamInfo]:
    """Every setting, those the sweep varies (or, outside a sweep, USUALLY_VARIED) marked
    `differs` and given the sweep's values when they are of the run's value's type."""
    types = {bool: api_pb2.DATA_TYPE_BOOL, str: api_pb2.DATA_TYPE_STRING,
             float: api_pb2.DATA_TYPE_FLOAT64}  # fmt: skip
    shown_first = sweep.values or dict.fromkeys(USUALLY_VARIED)
    infos = []
    for name, value in hparams.items():
        info = api_pb2.HParamInfo(name=name, type=types[_kind(value)], differs=name in shown_first)
        domain = sweep.values.get(name, [])
        if domain and all(_kind(v) is _kind(value) for v in domain):
            info.domain_discrete.values.extend(_value(v) for v in domain)
        infos.append(info)
    return infos


def metric_tags(tags: ScalarTags) -> list[str]:
    """The tags the HParams tab shows: the deciding split's metrics (the main one first), the
    other split's, the training loss and metrics, then the costs."""
    evaluated = [f"{split}/{m}" for split in tags.splits for m in tags.metrics]
    training = dict.fromkeys(["train/loss", *(f"train/{m}" for m in tags.metrics)])
    return [*evaluated, *training, *COSTS]


def _summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data))])


def write_hparams(
    writer: SummaryWriter, run_dir: Path, cfg: DictConfig, tags: ScalarTags,
    results: dict[str, Any],
) -> None:  # fmt: skip
    """Write the run's HParams entry: the experiment config, and the session's start and end."""
    sweep = Sweep.of(run_dir)
    hparams = run_hparams(cfg, sweep, run_dir)
    experiment = api_pb2.Experiment(
        hparam_infos=hparam_infos(hparams, sweep),
        metric_infos=[
            api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in metric_tags(tags)
        ],
    )
    start = plugin_data_pb2.SessionStartInfo(
        group_name=trial_name(hparams, sweep, run_dir),
        start_time_secs=time.time() - results["wall_time_s"],
    )
    for name, value in hparams.items():
        start.hparams[name].CopyFrom(_value(value))
    end = plugin_data_pb2.SessionEndInfo(
        status=SESSION_STATUS.get(results["status"], api_pb2.STATUS_UNKNOWN),
        end_time_secs=time.time(),
    )
    file_writer = writer._get_file_writer()
    for tag, data in (
        (metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment)),
        (metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)),
        (metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end)),
    ):  # fmt: skip
        file_writer.add_summary(_summary(tag, data))
