"""The schema is the source of types: every key of every YAML is in it with the same default,
and what OmegaConf's bool accepts means what it says."""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

import pytest
from conftest import FAST
from helpers import compose_config
from omegaconf import DictConfig, ListConfig, OmegaConf

from optbench.data import DATASETS
from optbench.errors import UserError
from optbench.models import MODELS
from optbench.optim.registry import OPTIMIZERS
from optbench.run import build_run
from optbench.run.schema import (
    LrFindConfig,
    MomentumConfig,
    ParamGroupsConfig,
    PathsConfig,
    ToyConfig,
    TrainerConfig,
    optimizer_schema,
    typed,
)
from optbench.schedules.registry import SCHEDULERS

CONFIGS = Path(str(resources.files("optbench.configs")))


def leaves(node: DictConfig, prefix: str = "") -> dict[str, object]:
    """key path -> value, interpolations kept as written (`${paths.data_dir}`)."""
    found: dict[str, object] = {}
    for key in node:
        value = node._get_node(key)
        if isinstance(value, DictConfig) and not OmegaConf.is_interpolation(node, key):
            found |= leaves(value, f"{prefix}{key}.")
        elif OmegaConf.is_interpolation(node, key) or OmegaConf.is_missing(node, key):
            found[f"{prefix}{key}"] = value._value()
        elif isinstance(value, ListConfig):
            found[f"{prefix}{key}"] = OmegaConf.to_container(value)
        else:
            found[f"{prefix}{key}"] = node[key]
    return found


def assert_same(yaml: DictConfig, schema: type, where: str) -> None:
    documented, typed_defaults = leaves(yaml), leaves(OmegaConf.structured(schema))
    assert documented.keys() == typed_defaults.keys(), where
    for key, value in documented.items():
        if isinstance(value, str) and value.startswith("${"):
            continue  # e.g. root: ${paths.data_dir}, whose default the paths block has
        assert value == typed_defaults[key], f"{where}: {key} is {value!r} in the YAML"
        # A float may be written as an integer (9 for 9.0): the schema converts it.
        kinds = (type(value), type(typed_defaults[key]))
        assert kinds[0] is kinds[1] or value is None or kinds == (int, float), f"{where}: {key}"


@pytest.mark.parametrize(
    ("group", "registry"), [("dataset", DATASETS), ("model", MODELS), ("scheduler", SCHEDULERS)]
)
def test_every_group_option_documents_exactly_its_schema(group, registry):
    files = sorted((CONFIGS / group).glob("*.yaml"))
    assert {f.stem for f in files} == set(registry)
    for path in files:
        schema = registry[path.stem].schema
        if not isinstance(schema, type):  # a user's class (model=custom): its constructor's keys
            assert OmegaConf.to_container(OmegaConf.load(path)) == {
                "name": "custom",
                "target": "???",
            }
            continue
        assert_same(OmegaConf.load(path), schema, str(path))


def test_the_fixed_blocks_of_train_yaml_are_the_schema():
    train = OmegaConf.load(CONFIGS / "train.yaml")
    for block, schema in [("trainer", TrainerConfig), ("momentum", MomentumConfig),
                          ("param_groups", ParamGroupsConfig), ("lr_find", LrFindConfig)]:  # fmt: skip
        assert_same(train[block], schema, f"train.yaml {block}")
    assert set(train.paths) == {f.name for f in dataclasses.fields(PathsConfig)}


def test_toy_yaml_is_its_schema():
    toy = OmegaConf.load(CONFIGS / "toy.yaml")
    assert_same(OmegaConf.masked_copy(toy, [k for k in toy if k not in ("hydra", "defaults")]),
                ToyConfig, "toy.yaml")  # fmt: skip


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_yaml_key_is_a_constructor_argument(name):
    documented = OmegaConf.load(CONFIGS / "optimizer" / f"{name}.yaml")
    keys = {f.name for f in dataclasses.fields(optimizer_schema(documented))}
    assert set(documented) <= keys
    cfg = compose_config(*FAST, f"optimizer={name}")
    assert OmegaConf.to_container(typed(cfg).optimizer) == OmegaConf.to_container(cfg.optimizer)


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [("trainer.drop_last=no", "trainer.drop_last", False),
     ("trainer.drop_last=yes", "trainer.drop_last", True),
     ("param_groups.no_decay_bias_norm=off", "param_groups.no_decay_bias_norm", False),
     ("trainer.deterministic=1", "trainer.deterministic", True),
     ("optimizer=momentum +optimizer.nesterov=no", "optimizer.nesterov", False)],
)  # fmt: skip
def test_a_switch_means_what_omegaconf_s_bool_reads(override, key, expected):
    run = build_run(compose_config(*FAST, *override.split()), meta=True)
    assert OmegaConf.select(run.cfg, key) is expected


def test_no_drops_nothing_and_yes_drops_the_short_batch():
    # 512 samples in batches of 96: 5 full batches and a short one.
    def steps(flag: str) -> int:
        cfg = compose_config(*FAST, "trainer.batch_size=96", f"trainer.drop_last={flag}")
        return build_run(cfg, meta=True).plan.steps_per_epoch

    assert (steps("no"), steps("false"), steps("yes")) == (6, 6, 5)


@pytest.mark.parametrize(
    ("override", "message"),
    [("+trainer.epoch=3", "unknown key trainer.epoch (did you mean trainer.epochs?)"),
     ("+dataset.sepration=0.1", "unknown key dataset.sepration (did you mean dataset.separation?)"),
     ("+model.depth=3", "unknown key model.depth"),
     ("+scheduler.gamma=0.5", "unknown key scheduler.gamma"),
     ("+optimizer.amsgrad=true", "optimizer=momentum: unknown key amsgrad"),
     ("+trainer.clip.norm=1", "unknown key trainer.clip.norm"),
     ("+nonsense=1", "unknown key nonsense"),
     ("trainer.deterministic=perhaps", "trainer.deterministic must be true or false, got 'perhaps'"),
     ("trainer.clip=5", "trainer.clip is a block of keys (mode, max), got 5"),
     ("~optimizer.lr", "optimizer.lr is missing"),
     ("~trainer.epochs", "trainer.epochs is missing"),
     ("dataset.noise=loud", "dataset.noise must be a number, got 'loud'"),
     ("model.hidden=wide", "model.hidden must be a list, got 'wide'")],
)  # fmt: skip
def test_what_the_schema_refuses(override, message):
    with pytest.raises(UserError, match="^" + message.replace("(", r"\(").replace(")", r"\)")
                       .replace("?", r"\?").replace(".", r"\.")):  # fmt: skip
        typed(compose_config(*FAST, override))
