"""The config's schema: every key's type, checked by OmegaConf before anything runs.

A composed config is merged into the schema of what it selects, so an unknown key (also one
added with `+`), a word where a number belongs, or a switch given `perhaps` is a one-line
error naming the key, and `trainer.drop_last=no` means false. The fixed blocks are the
dataclasses below; a group option's keys come from its registry entry: a dataset's, model's
and schedule's `schema` dataclass, an optimizer's constructor signature. The YAMLs document
the defaults; `tests/test_schema.py` checks every key of every YAML against this schema.

Types only: what a value may be (ranges, relations between keys) is checked where the value
is used, by the same `build_run` the pre-flight check calls.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
from dataclasses import dataclass, field, make_dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from optbench.data import DATASETS
from optbench.errors import UserError
from optbench.models import MODELS
from optbench.optim.factory import accepted_keys
from optbench.optim.registry import info_of
from optbench.schedules.registry import SCHEDULERS


@dataclass
class PathsConfig:
    data_dir: str = "data"
    output_dir: str = "outputs"


@dataclass
class ClipConfig:
    mode: str = "none"
    max: float = 1.0


@dataclass
class LookaheadConfig:
    every: int = 0
    decay: float = 0.95
    power: float = 3.0


@dataclass
class TrainerConfig:
    epochs: int = 10
    batch_size: int = 128
    accumulation: int = 1
    drop_last: bool = False
    eval_batch_size: int = 1024
    eval_interval: int = 1
    eval_every: int = 0
    seed: int = 0
    device: str = "auto"
    devices: int = 1
    sync_batchnorm: bool = False
    amp: str = "none"
    compile: Any = False  # false | model | step (true: model)
    compile_mode: str = "default"
    channels_last: Any = "auto"  # auto | true | false
    clip: ClipConfig = field(default_factory=ClipConfig)
    label_smoothing: float = 0.0
    log_interval: int = 20
    diagnostics_interval: int = 50
    targets: list[float] = field(default_factory=list)
    target_metric: str | None = None
    tta: str = "none"
    on_nonfinite: str = "stop"
    nonfinite_check: str = "auto"
    deterministic: bool = False
    checkpoint_every: int = 1
    keep_checkpoints: int = 2
    keep_best: bool = False
    resume: str | None = None
    progress: bool = True
    lookahead: LookaheadConfig = field(default_factory=LookaheadConfig)


@dataclass
class MomentumConfig:
    schedule: str = "none"
    low: float = 0.85
    high: float = 0.95
    milestones: Any = None  # epoch -> momentum
    rescale_buffers: bool = False
    reset_at_epochs: list[int] = field(default_factory=list)
    scale_at_epochs: Any = None  # epoch -> factor


@dataclass
class ParamGroupsConfig:
    no_decay_bias_norm: bool = True
    lr_multipliers: Any = None  # module name -> factor
    layer_decay: float | None = None
    norm_lr_multiplier: float = 1.0
    decay_per_step: bool = False


@dataclass
class LrFindConfig:
    start_lr: float = 1.0e-7
    end_lr: float = 10.0
    num_iter: int = 100
    mode: str = "exp"
    batches_per_step: int = 1
    smoothing: float = 0.85
    diverge_factor: float = 4.0
    patience: int = 3
    validation_batches: int = 0
    seeds: int = 1
    rule: str = "valley"


@dataclass
class MlflowLoggerConfig:
    enabled: bool = False
    tracking_uri: str | None = None
    experiment: str = "optbench"


@dataclass
class WandbLoggerConfig:
    enabled: bool = False
    project: str = "optbench"
    mode: str = "offline"


@dataclass
class LoggersConfig:
    """Experiment trackers beside TensorBoard (optbench/tracking/loggers.py)."""

    mlflow: MlflowLoggerConfig = field(default_factory=MlflowLoggerConfig)
    wandb: WandbLoggerConfig = field(default_factory=WandbLoggerConfig)


@dataclass
class ScheduleCommandConfig:
    compare: list[str] = field(default_factory=list)


@dataclass
class ToyLrGridConfig:
    enabled: bool = False
    factors: list[float] = field(default_factory=lambda: [0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100])


@dataclass
class ToyPlotConfig:
    loss_panel: bool = True
    gif: bool = False
    gif_frames: int = 60
    gif_fps: int = 12


@dataclass
class ToyPathsConfig:
    output_dir: str = "outputs"


@dataclass
class ToyConfig:
    """`optbench toy`'s config (configs/toy.yaml)."""

    function: str = "rosenbrock"
    optimizers: Any = field(
        default_factory=lambda: ["sgd", "momentum", "nesterov", "rmsprop", "adam"]
    )
    impl: str = "library"
    steps: int = 500
    lr: Any = None  # optimizer -> LR
    start: list[float] | None = None
    threshold: float = 0.01
    bound: float = 1000.0
    seed: int = 0
    lr_grid: ToyLrGridConfig = field(default_factory=ToyLrGridConfig)
    plot: ToyPlotConfig = field(default_factory=ToyPlotConfig)
    paths: ToyPathsConfig = field(default_factory=ToyPathsConfig)


def typed_toy(cfg: DictConfig) -> DictConfig:
    """`optbench toy`'s config checked against `ToyConfig`, as `typed` checks training's."""
    schema = OmegaConf.structured(ToyConfig)
    body = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    for key in body:
        if key not in schema:
            raise UserError(_unknown(str(key), list(schema.keys())))
    _check_blocks(schema, body, "")
    try:
        merged = OmegaConf.merge(schema, body)
    except OmegaConfBaseException as err:
        raise UserError(_one_line(err, schema, body)) from None
    return OmegaConf.create(OmegaConf.to_container(merged, resolve=False))


# Blocks the experiment presets add for the commands that read them, each checked there
# (optbench/studies/): schema-free here.
COMMAND_BLOCKS = ("search", "tuning")


def _top_level(cfg: DictConfig) -> dict[str, Any]:
    """The fixed blocks' schemas, and the selected group options' from their registries."""
    nodes: dict[str, Any] = {
        "paths": PathsConfig,
        "trainer": TrainerConfig,
        "momentum": MomentumConfig,
        "param_groups": ParamGroupsConfig,
        "lr_find": LrFindConfig,
        "loggers": LoggersConfig,
        "dataset": _entry_schema("dataset", cfg, DATASETS),
        "model": _entry_schema("model", cfg, MODELS),
        "scheduler": _entry_schema("scheduler", cfg, SCHEDULERS),
        "optimizer": optimizer_schema(cfg.optimizer),
    }
    if "schedule" in cfg:  # optbench schedule's own block
        nodes["schedule"] = ScheduleCommandConfig
    return nodes


def _entry_schema(group: str, cfg: DictConfig, registry: dict[str, Any]) -> type:
    name = OmegaConf.select(cfg, f"{group}.name")
    if name not in registry:
        raise UserError(f"unknown {group} '{name}'; choose from {', '.join(registry)}")
    schema = registry[name].schema
    return schema if isinstance(schema, type) else schema(cfg[group])


def optimizer_schema(cfg: DictConfig) -> type:
    """An optimizer's keys, from its constructor (and its builder's own keys): a switch (a
    key whose default in the signature, or documented value, is true or false) is typed as
    one; numbers, pairs and `auto` are left to the optimizer's own checks."""
    info = info_of(cfg)
    accepted = accepted_keys(cfg, info)
    own = ["target"] if info.origin == "target" else []
    keys = dict.fromkeys(["name", "impl", *own, *accepted, *info.defaults])

    def switch(key: str) -> bool:
        default = accepted.get(key, inspect.Parameter.empty)
        return isinstance(default, bool) or isinstance(cfg.get(key), bool)

    fields = [(key, bool | None if switch(key) else Any, field(default=None)) for key in keys]
    return make_dataclass(f"{info.name}_optimizer", fields)


def typed(cfg: DictConfig) -> DictConfig:
    """`cfg` merged into its schema: types checked and converted ('no' is false), unknown keys
    refused, all as one-line UserErrors naming the key. Returns a plain config holding the
    keys `cfg` had (an optimizer's other constructor arguments keep their defaults)."""
    if not isinstance(cfg, DictConfig):
        raise UserError(f"the config must be a mapping, got {type(cfg).__name__}")
    for block in ("trainer", "dataset", "model", "optimizer", "scheduler"):
        if not isinstance(cfg.get(block), DictConfig):
            raise UserError(f"{block} must be a config group or block, got {cfg.get(block)!r}")
    nodes = _top_level(cfg)
    for key in cfg:
        if key not in {*nodes, *COMMAND_BLOCKS, "hydra"}:
            raise UserError(_unknown(str(key), list(nodes)))
    nodes = {k: nodes[k] for k in [*cfg, *nodes] if k in nodes}  # the config's order
    schema = OmegaConf.structured(
        make_dataclass("TrainConfig", [(k, v, field(default_factory=v)) for k, v in nodes.items()])
    )
    _check_blocks(schema, cfg, "")
    takes = [f.name for f in dataclasses.fields(nodes["optimizer"])]
    if unknown := [key for key in cfg.optimizer if key not in takes]:
        raise UserError(
            f"optimizer={cfg.optimizer.name}: unknown key{'s' * (len(unknown) > 1)} "
            f"{', '.join(map(str, unknown))}; it takes {', '.join(sorted(takes[2:]))}"
        )
    if "lr" not in cfg.optimizer:
        raise UserError(
            f"optimizer.lr is missing; set it (optimizer={cfg.optimizer.name} documents one)"
        )
    try:
        merged = OmegaConf.merge(schema, OmegaConf.masked_copy(cfg, list(nodes)))
    except OmegaConfBaseException as err:
        raise UserError(_one_line(err, schema, cfg)) from None
    plain = OmegaConf.create(OmegaConf.to_container(merged, resolve=False))
    with open_dict(plain):
        for block in ("optimizer", "model"):  # constructor keys the config leaves out
            for key in set(plain[block]) - set(cfg[block]):
                del plain[block][key]
        for key in cfg:
            if key not in nodes:
                plain[key] = cfg[key]
    return plain


def _check_blocks(schema: DictConfig, cfg: DictConfig, prefix: str) -> None:
    """A block of keys (`trainer.clip`) given a single value is refused by its name, and so is
    a key removed with `~` (it would silently take the schema's default)."""
    for key in schema:
        node = schema._get_node(key)  # unresolved: a `???` default is not an error here
        # An optimizer's or a user's class's keys left out keep their constructor's default.
        if key not in cfg and not (prefix.startswith("optimizer.") or "target" in cfg):
            raise UserError(f"{prefix}{key} is missing; set it rather than remove it")
        if isinstance(node, DictConfig) and key in cfg:
            value = cfg._get_node(key)
            if isinstance(value, DictConfig):
                _check_blocks(node, value, f"{prefix}{key}.")
            elif not OmegaConf.is_interpolation(cfg, key):
                raise UserError(
                    f"{prefix}{key} is a block of keys ({', '.join(node.keys())}), got {cfg[key]!r}"
                )


def _unknown(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key.rpartition(".")[2], known, n=1)
    hint = (
        f" (did you mean {key.rpartition('.')[0] + '.' if '.' in key else ''}{close[0]}?)"
        if close
        else ""
    )
    return f"unknown key {key}{hint}; {key.rpartition('.')[0] or 'the config'} takes {', '.join(known)}"


def _one_line(err: OmegaConfBaseException, schema: DictConfig, cfg: DictConfig) -> str:
    key = getattr(err, "full_key", None) or ""
    if isinstance(err, ConfigKeyError):
        parent = key.rpartition(".")[0]
        node = OmegaConf.select(schema, parent) if parent else schema
        return _unknown(key, list(node.keys()) if isinstance(node, DictConfig) else [])
    if isinstance(err, ValidationError):
        text = str(err).splitlines()[0]
        value = re.search(r"Value '(.*?)'", text)
        given = OmegaConf.select(cfg, key.split("[")[0], default=None) if key else None
        shown = repr(value.group(1)) if value else repr(given)
        for pattern, kind in _KINDS.items():
            if pattern in text:
                return f"{key} must be {kind}, got {shown}"
    return f"{key}: {str(err).splitlines()[0]}" if key else str(err).splitlines()[0]


# What OmegaConf's message says -> what the value must be.
_KINDS = {
    "valid bool": "true or false",
    "to Integer": "an integer",
    "to Float": "a number",
    "is not a ListConfig": "a list",
    "is not a DictConfig": "a mapping",
    "is not a subclass of": "a mapping",
}
