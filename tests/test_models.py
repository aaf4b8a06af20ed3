"""Models take their input shape and class count from the dataset."""

from __future__ import annotations

import pytest
import torch
from helpers import compose_config
from omegaconf import OmegaConf

from optbench.data import DatasetInfo
from optbench.errors import UserError
from optbench.models import MODELS, build_model

IMAGE_MODELS = sorted(n for n, e in MODELS.items() if e.inputs == "images")


@pytest.mark.parametrize("name", IMAGE_MODELS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_every_image_model_fits_every_image_shape(name, shape):
    cfg = compose_config(f"model={name}").model
    model = build_model(cfg, DatasetInfo(shape, 7, 10, 10))
    assert model(torch.randn(2, *shape)).shape == (2, 7)


def test_the_gpt_maps_every_position_to_next_token_logits_and_is_causal():
    model = build_model(compose_config("model=gpt").model, DatasetInfo((16,), 50, 10, 10))
    tokens = torch.randint(50, (2, 16))
    logits = model(tokens)
    assert logits.shape == (2, 16, 50)
    changed = tokens.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 50
    # Changing token 10 leaves the logits of positions 0-9 exactly as they were.
    assert torch.equal(model(changed)[:, :10], logits[:, :10])
    assert not torch.equal(model(changed)[:, 10:], logits[:, 10:])


def test_a_model_given_the_wrong_kind_of_input_is_a_user_error():
    with pytest.raises(UserError, match="model=gpt takes tokens, but the dataset gives images"):
        build_model(compose_config("model=gpt").model, DatasetInfo((3, 32, 32), 10, 1, 1))
    with pytest.raises(
        UserError, match="model=resnet18 takes images, but the dataset gives tokens"
    ):
        build_model(compose_config("model=resnet18").model, DatasetInfo((16,), 256, 1, 1))


def test_cifar_resnet18_has_the_published_parameter_count():
    model = build_model(compose_config("model=resnet18").model, DatasetInfo((3, 32, 32), 10, 1, 1))
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(11.17e6, rel=1e-3)


def test_unknown_model_is_a_user_error():
    with pytest.raises(UserError, match="unknown model"):
        build_model(OmegaConf.create({"name": "vgg"}), DatasetInfo((3, 32, 32), 10, 1, 1))
