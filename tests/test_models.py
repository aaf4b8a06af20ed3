"""Models take their input shape and class count from the dataset."""

from __future__ import annotations

import pytest
import torch
from helpers import compose_config
from omegaconf import OmegaConf

from optbench.data import DatasetInfo
from optbench.errors import UserError
from optbench.models import MODELS, build_model


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_every_model_fits_every_dataset_shape(name, shape):
    cfg = compose_config(f"model={name}").model
    model = build_model(cfg, DatasetInfo(shape, 7, 10, 10))
    assert model(torch.randn(2, *shape)).shape == (2, 7)


def test_cifar_resnet18_has_the_published_parameter_count():
    model = build_model(compose_config("model=resnet18").model, DatasetInfo((3, 32, 32), 10, 1, 1))
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(11.17e6, rel=1e-3)


def test_unknown_model_is_a_user_error():
    with pytest.raises(UserError, match="unknown model"):
        build_model(OmegaConf.create({"name": "vgg"}), DatasetInfo((3, 32, 32), 10, 1, 1))
