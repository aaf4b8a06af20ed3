"""Parameter groups: weight decay exemptions, LR multipliers, layer-wise LR decay."""

from __future__ import annotations

import pytest
from torch import nn

from optbench.errors import UserError
from optbench.models.resnet import ResNet18
from optbench.optim import parameter_groups


def resnet() -> nn.Module:
    return ResNet18(3, 10, width=8)


def by_name(groups):
    return {g["name"]: g for g in groups}


def test_biases_and_norm_weights_get_no_weight_decay():
    groups = by_name(parameter_groups(resnet(), weight_decay=5e-4))
    assert set(groups) == {"decay", "no_decay"}
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["decay"]["weight_decay"] == 5e-4
    assert {"stem.1.weight", "stem.1.bias", "head.2.bias"} <= set(groups["no_decay"]["param_names"])
    assert all(p.ndim > 1 for p in groups["decay"]["params"])
    assert all(p.ndim == 1 for p in groups["no_decay"]["params"])


def test_the_exemption_can_be_switched_off():
    groups = parameter_groups(resnet(), weight_decay=5e-4, no_decay_bias_norm=False)
    assert [g["name"] for g in groups] == ["decay"]


def test_lr_multipliers_scale_the_matching_modules():
    groups = by_name(parameter_groups(resnet(), weight_decay=0.0, lr_multipliers={"head": 10.0}))
    assert groups["head/decay"]["lr_scale"] == pytest.approx(10.0)
    assert groups["head/no_decay"]["param_names"] == ["head.2.bias"]
    assert groups["decay"]["lr_scale"] == 1.0
    assert all("lr" not in g for g in groups.values())  # the multiplier is never baked into lr


def test_layer_decay_gives_the_head_the_full_lr_and_the_stem_the_least():
    groups = by_name(parameter_groups(resnet(), weight_decay=0.0, layer_decay=0.5))
    # stem, layer1..4, head: depths 0..5
    assert groups["depth5/decay"]["lr_scale"] == pytest.approx(1.0)
    assert groups["depth0/decay"]["lr_scale"] == pytest.approx(0.5**5)
    assert all(n.startswith("stem") for n in groups["depth0/decay"]["param_names"])


def test_every_parameter_lands_in_exactly_one_group():
    model = resnet()
    groups = parameter_groups(
        model, weight_decay=1e-4, lr_multipliers={"layer4": 0.5}, layer_decay=0.9
    )
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == len(list(model.parameters()))


def test_a_multiplier_for_a_missing_module_is_a_user_error():
    with pytest.raises(UserError, match="no module 'backbone'"):
        parameter_groups(resnet(), weight_decay=0.0, lr_multipliers={"backbone": 0.1})


def test_a_norm_multiplier_with_decay_per_step_keeps_every_groups_lr_times_decay():
    model = resnet()
    groups = by_name(
        parameter_groups(
            model,
            weight_decay=1e-3,
            no_decay_bias_norm=False,
            norm_lr_multiplier=64.0,
            decay_per_step=True,
        )
    )
    norms = {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    norm_params = {f"{m}.{p}" for m in norms for p in ("weight", "bias")}
    assert set(groups["norm/decay"]["param_names"]) == norm_params
    assert groups["norm/decay"]["lr_scale"] == 64.0
    for group in groups.values():
        assert group["lr_scale"] * group["weight_decay"] == pytest.approx(1e-3)


def test_a_module_alias_is_no_layer_of_its_own():
    """airbench94 names its stem's first conv `whiten` too: the head must still be the last
    layer (Muon leaves it to SGD/AdamW; layer decay gives it the full LR)."""
    from optbench.models.airbench import Airbench94

    model = Airbench94(3, 10, (8, 16, 16))
    assert model.whiten is model.stem[0]
    (group,) = parameter_groups(model, weight_decay=0.0, no_decay_bias_norm=False)
    layers = dict(zip(group["param_names"], group["layers"], strict=True))
    assert group["num_layers"] == 5  # stem, three conv groups, head
    assert layers["stem.0.bias"] == 0 and layers["head.2.weight"] == 4
    decayed = parameter_groups(model, weight_decay=0.0, layer_decay=0.5)
    head = next(g for g in decayed if "head.2.weight" in g["param_names"])
    assert head["lr_scale"] == 1.0
