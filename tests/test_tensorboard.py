"""What TensorBoard shows of a run, read back the way TensorBoard reads it: the scalar tags
the README lists, the Custom Scalars layout, and the HParams experiment of a sweep folder as
the hparams plugin's own backend builds it."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import FAST
from tensorboard import context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins import base_plugin
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

from optbench.cli import main
from optbench.tracking.hparams import Sweep
from optbench.train.trainer import train

README = Path(__file__).parents[1] / "README.md"
# The README's "only when" conditions, and whether each holds for test_a_cpu_run...: a CPU
# run with a validation split, AdamW (momentum on), no clipping, no AMP, diagnostics on.
CONDITIONS = {
    "always": True,
    "with a validation split": True,
    "momentum is on": True,
    "`trainer.diagnostics_interval` > 0": True,
    "`trainer.diagnostics_interval` > 0 and momentum is on": True,
    "`trainer.clip.mode` is not `none`": False,
    "`trainer.amp=fp16`": False,
    "on CUDA": False,
}


def readme_tags(metrics: list[str], groups: list[str]) -> set[str]:
    """The tags the README's TensorBoard table says this run writes."""
    section = README.read_text().split("### TensorBoard: what a run shows", 1)[1]
    section = section.split("\n### ", 1)[0]
    rows = re.findall(r"^\| (`[^|]*?) \| [^|]*? \| ([^|]*?) \|$", section, re.M)
    assert len(rows) >= 10
    tags = set()
    for cell, condition in rows:
        assert condition in CONDITIONS, condition  # a new condition needs a decision here
        if CONDITIONS[condition]:
            for tag in re.findall(r"`([^`]+)`", cell):
                for metric in metrics:
                    for group in groups:
                        tags.add(tag.replace("<metric>", metric).replace("<group>", group))
    return tags


def events_of(run_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def test_a_cpu_run_writes_the_readme_s_tags_and_a_layout_led_by_the_validation_metric(
    fast_cfg, tmp_path
):
    cfg = fast_cfg("optimizer=adamw", "trainer.epochs=2", "trainer.diagnostics_interval=5")
    results = train(cfg, tmp_path)
    assert results["status"] == "completed" and results["scaler_skipped_steps"] == 0
    events = events_of(tmp_path)

    written = set(events.Tags()["scalars"])
    assert written == readme_tags(["acc", "loss"], ["decay", "no_decay"])
    assert "train/scaler_skipped_steps" not in written and "grad_norm/after_clip" not in written
    assert not any(t.startswith("hparams/") or t == "epoch/epoch" for t in written)

    # The Custom Scalars layout: the first category is the validation and test metric.
    (config,) = events.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(config.tensor_proto.string_val[0])
    first = layout.category[0]
    assert [c.title for c in first.chart][:2] == ["val/acc", "test/acc"]
    assert layout.category[1].chart[0].title == "train/loss"
    charted = {c.title for cat in layout.category for c in cat.chart if "<" not in c.title}
    assert charted <= written  # no chart of a tag the run does not write

    experiment = experiment_of(tmp_path)
    names = [h.name for h in experiment.hparam_infos]
    assert {"optimizer", "lr", "seed", "scheduler", "dataset", "batch_size"} <= set(names)
    assert not {"accumulation", "amp", "clip"} & set(names)  # off: no column
    assert experiment.metric_infos[0].name.tag == "val/acc"  # the main validation metric
    assert {m.name.tag for m in experiment.metric_infos} <= written


def tensorboard_backend(logdir: Path) -> tuple[backend_context.Context, context.RequestContext]:
    """The hparams plugin's backend over `logdir`, as `tensorboard --logdir` serves it."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    tb = base_plugin.TBContext(logdir=str(logdir), data_provider=provider, multiplexer=multiplexer)
    return backend_context.Context(tb), context.RequestContext()


def experiment_of(logdir: Path) -> api_pb2.Experiment:
    backend, request = tensorboard_backend(logdir)
    return backend.experiment_from_metadata(
        request, "", True, backend.hparams_metadata(request, ""),
        backend.hparams_from_data_provider(request, "", None),
    )  # fmt: skip


def test_a_sweep_folder_shows_the_keys_the_sweep_varies_first_with_every_value(tmp_path):
    sweep = tmp_path / "sweep"
    # Job folders by number: Hydra's default name (every override) is too long with FAST's.
    overrides = ["optimizer=adamw,momentum", "optimizer.lr=0.01,0.003", "trainer.epochs=1",
                 "trainer.clip.mode=norm"]  # fmt: skip
    assert main(["train", "-m", *FAST, *overrides, "trainer.diagnostics_interval=0",
                 f"hydra.sweep.dir={sweep}",
                 "hydra.sweep.subdir=${hydra.job.num}"]) == 0  # fmt: skip
    experiment = experiment_of(sweep)

    infos = {h.name: h for h in experiment.hparam_infos}
    varied = [h.name for h in experiment.hparam_infos if h.differs]
    assert sorted(varied) == ["lr", "optimizer"]  # the tab ticks these first
    assert [v.string_value for v in infos["optimizer"].domain_discrete.values] == [
        "adamw",
        "momentum",
    ]
    assert [v.number_value for v in infos["lr"].domain_discrete.values] == [0.01, 0.003]
    assert not infos["dataset"].differs and not infos["seed"].differs
    assert infos["clip"].type == api_pb2.DATA_TYPE_STRING and not infos["clip"].differs  # on
    assert experiment.metric_infos[0].name.tag == "val/acc"

    # The plugin's session groups: one per job, named by what varied, with its last val/acc.
    backend, request = tensorboard_backend(sweep)
    groups = list_session_groups.Handler(
        request, backend, "", api_pb2.ListSessionGroupsRequest(
            start_index=0, slice_size=10, allowed_statuses=[api_pb2.STATUS_SUCCESS],
            col_params=[api_pb2.ColParams(metric=api_pb2.MetricName(tag="val/acc"))],
        ),
    ).run().session_groups  # fmt: skip
    names = sorted(g.name for g in groups)
    assert names == sorted(
        f"{opt} lr={lr} · sweep/{i}"
        for i, (opt, lr) in enumerate(
            (o, lr) for o in ("adamw", "momentum") for lr in ("0.01", "0.003")
        )
    )
    for group in groups:
        job = sweep / group.name[-1]
        last = next(m for m in group.metric_values if m.name.tag == "val/acc")
        events = EventAccumulator(str(job)).Reload()
        assert last.value == events.Scalars("val/acc")[-1].value
        assert "grad_norm/after_clip" in events.Tags()["scalars"]  # clipping on: written


def test_a_sweep_s_keys_come_from_its_overrides_and_a_preset_s_params(tmp_path):
    (tmp_path / "job").mkdir()
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n"
        "  overrides:\n"
        "    task: ['dataset=synthetic', 'trainer.seed=range(0,3)', 'trainer.clip.max=0.5,1']\n"
        "  sweeper:\n"
        "    params: {optimizer: 'sgd,lion'}\n"
    )
    assert Sweep.of(tmp_path / "job").values == {
        "seed": [0, 1, 2], "trainer.clip.max": [0.5, 1], "optimizer": ["sgd", "lion"],
    }  # fmt: skip
    (tmp_path / "multirun.yaml").write_text("hydra: [unclosed")
    assert Sweep.of(tmp_path / "job").values == {}  # unreadable: no sweep, and no error
