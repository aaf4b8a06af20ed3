"""Datasets and the on-device batch pipeline."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from optbench.data import DeviceBatches, ImageSplit, dataset_info, load_dataset
from optbench.data.idx import read_idx
from optbench.errors import UserError

CPU = torch.device("cpu")


def position_coded_split(n: int = 6, size: int = 8) -> ImageSplit:
    """Images whose pixel value encodes its position (1 + row * size + col), plus the sample index."""
    base = torch.arange(size * size, dtype=torch.uint8).view(1, 1, size, size) + 1
    images = base.repeat(n, 1, 1, 1)
    return ImageSplit(images, torch.arange(n))


def batches(split: ImageSplit, **kwargs) -> DeviceBatches:
    defaults = dict(batch_size=4, device=CPU, mean=(0.0,), std=(1 / 255,))
    return DeviceBatches(split, **{**defaults, **kwargs})


def test_every_sample_gets_its_own_crop_and_flip():
    split = position_coded_split(n=64)
    pad, size = 2, 8
    padded = torch.nn.functional.pad(split.images[0, 0].float(), [pad] * 4)
    windows = {}
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            window = padded[dy : dy + size, dx : dx + size]
            windows[(dy, dx, False)] = window
            windows[(dy, dx, True)] = window.flip(-1)
    seen = set()
    for images, _ in batches(split, batch_size=64, crop_padding=pad, flip=True).epoch(0):
        for image in images[:, 0]:
            matches = [key for key, w in windows.items() if torch.equal(image, w)]
            assert len(matches) >= 1  # each output is a window of its padded input, maybe flipped
            seen.add(matches[0])
    assert len(seen) > 20  # 64 samples of one image: many different crops and flips in one batch
    assert {flip for _, _, flip in seen} == {True, False}


def test_an_epoch_is_a_pure_function_of_seed_and_epoch():
    split = position_coded_split(n=10)
    make = lambda: batches(split, shuffle=True, crop_padding=1, flip=True, seed=3)  # noqa: E731
    full = list(make().epoch(2))
    again = list(make().epoch(2))
    resumed = list(make().epoch(2, start_batch=1))
    for (x1, y1), (x2, y2) in zip(full, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    for (x1, y1), (x2, y2) in zip(full[1:], resumed, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    other_epoch = torch.cat([y for _, y in make().epoch(3)])
    assert not torch.equal(torch.cat([y for _, y in full]), other_epoch)


@pytest.mark.parametrize(("drop_last", "sizes"), [(False, [4, 4, 2]), (True, [4, 4])])
def test_last_partial_batch_is_kept_or_dropped(drop_last, sizes):
    data = batches(position_coded_split(n=10), shuffle=True, drop_last=drop_last)
    labels = [y for _, y in data.epoch(0)]
    assert [len(y) for y in labels] == sizes == [len(y) for y in labels[: len(data)]]
    seen = torch.cat(labels)
    assert len(set(seen.tolist())) == len(seen)  # no sample twice in an epoch


def test_batches_are_normalised_with_the_given_statistics():
    split = ImageSplit(
        torch.full((4, 2, 3, 3), 153, dtype=torch.uint8), torch.zeros(4, dtype=torch.long)
    )
    images, _ = next(batches(split, mean=(0.5, 0.2), std=(0.1, 0.4)).epoch(0))
    assert images[:, 0].allclose(torch.tensor((0.6 - 0.5) / 0.1))
    assert images[:, 1].allclose(torch.tensor((0.6 - 0.2) / 0.4))


def write_idx(path: Path, array: torch.Tensor) -> None:
    header = bytes([0, 0, 0x08, array.dim()]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.numpy().tobytes())


def test_idx_files_round_trip_and_truncation_is_an_error(tmp_path):
    array = torch.randint(0, 256, (5, 4, 3), dtype=torch.uint8)
    write_idx(tmp_path / "a.gz", array)
    assert torch.equal(read_idx(tmp_path / "a.gz"), array)
    (tmp_path / "b").write_bytes(gzip.decompress((tmp_path / "a.gz").read_bytes())[:-7])
    with pytest.raises(UserError, match="truncated"):
        read_idx(tmp_path / "b")


def test_fashion_mnist_is_read_from_a_folder_of_idx_files(tmp_path):
    folder = tmp_path / "fmnist"
    folder.mkdir()
    for prefix, n in (("train", 7), ("t10k", 3)):
        write_idx(
            folder / f"{prefix}-images-idx3-ubyte.gz",
            torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8),
        )
        write_idx(
            folder / f"{prefix}-labels-idx1-ubyte.gz", torch.randint(0, 10, (n,), dtype=torch.uint8)
        )
    cfg = OmegaConf.create(
        {
            "name": "fashion_mnist",
            "root": str(tmp_path / "none"),
            "download": False,
            "search_dirs": [str(folder)],
            "val_size": 0,
            "split_seed": 0,
        }
    )
    data = load_dataset(cfg)
    assert data.train.images.shape == (7, 1, 28, 28) and data.test.images.shape == (3, 1, 28, 28)
    assert data.train.labels.dtype == torch.int64 and data.val is None

    cfg.val_size = 3
    held_out = load_dataset(cfg)
    assert (len(held_out.train), len(held_out.val)) == (4, 3)
    # Together the two are the training images, each once; the test images are untouched.
    rows = lambda split: sorted(map(tuple, split.images.flatten(1).tolist()))  # noqa: E731
    assert rows(held_out.train) + rows(held_out.val) != []
    assert sorted(rows(held_out.train) + rows(held_out.val)) == rows(data.train)
    assert torch.equal(held_out.test.images, data.test.images)
    assert torch.equal(load_dataset(cfg).val.images, held_out.val.images)  # fixed by split_seed
    cfg.split_seed = 1
    assert not torch.equal(load_dataset(cfg).val.images, held_out.val.images)
    assert (dataset_info(cfg).train_size, dataset_info(cfg).val_size) == (59_997, 3)
    cfg.val_size = 60_000  # the sizes are Fashion-MNIST's, known before loading
    with pytest.raises(UserError, match=r"dataset\.val_size=60000 leaves no training images"):
        dataset_info(cfg)


def test_missing_fashion_mnist_without_download_is_a_user_error(tmp_path):
    cfg = OmegaConf.create(
        {
            "name": "fashion_mnist",
            "root": str(tmp_path),
            "download": False,
            "search_dirs": [],
            "val_size": 0,
            "split_seed": 0,
        }
    )
    with pytest.raises(UserError, match="dataset-fashion-mnist"):
        load_dataset(cfg)


DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(
    not DEBIAN_FASHION_MNIST.is_dir(), reason="apt-get install dataset-fashion-mnist (.ci/run does)"
)
def test_fashion_mnist_loads_from_the_debian_package(tmp_path):
    cfg = OmegaConf.create(
        {
            "name": "fashion_mnist",
            "root": str(tmp_path),
            "download": False,
            "search_dirs": [str(DEBIAN_FASHION_MNIST)],
            "val_size": 5000,
            "split_seed": 0,
        }
    )
    data = load_dataset(cfg)
    assert len(data.val) == 5000 and sorted(data.val.labels.unique().tolist()) == list(range(10))
    assert data.train.images.shape == (55_000, 1, 28, 28) and data.test.images.shape == (
        10_000,
        1,
        28,
        28,
    )
    assert data.train.images.dtype == torch.uint8
    assert sorted(data.train.labels.unique().tolist()) == list(range(10))
    assert torch.bincount(data.test.labels).tolist() == [1000] * 10


def synthetic_cfg(**overrides):
    cfg = {"name": "synthetic", "shape": [3, 8, 8], "num_classes": 4, "train_size": 64, "test_size": 32,
           "val_size": 16, "separation": 0.2, "noise": 0.5, "seed": 0}  # fmt: skip
    return OmegaConf.create({**cfg, **overrides})


def test_synthetic_data_is_deterministic_by_seed():
    a, b, c = (
        load_dataset(synthetic_cfg()),
        load_dataset(synthetic_cfg()),
        load_dataset(synthetic_cfg(seed=1)),
    )
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.train.images, c.train.images)


def test_train_subset_shrinks_the_plan_and_the_data():
    cfg = synthetic_cfg(train_subset=10)
    assert dataset_info(cfg).train_size == 10
    assert len(load_dataset(cfg).train) == 10


def test_synthetic_validation_images_are_drawn_apart_from_training_and_test():
    data = load_dataset(synthetic_cfg())
    assert (len(data.train), len(data.val), len(data.test)) == (64, 16, 32)
    train_rows = set(map(tuple, data.train.images.flatten(1).tolist()))
    assert not train_rows & set(map(tuple, data.val.images.flatten(1).tolist()))
    # Training and test images do not depend on how many validation images there are.
    without = load_dataset(synthetic_cfg(val_size=0))
    assert without.val is None and torch.equal(without.test.images, data.test.images)
    assert torch.equal(without.train.images, data.train.images)


def test_text_holds_out_a_validation_part_before_the_test_part(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(bytes(range(256)) * 4)  # 1,024 bytes
    cfg = OmegaConf.create({"name": "text", "path": str(path), "block_size": 8,
                            "val_fraction": 0.25, "test_fraction": 0.125,
                            "windows_per_epoch": None})  # fmt: skip
    data = load_dataset(cfg)
    assert (len(data.train), len(data.val), len(data.test)) == (640, 256, 128)
    assert torch.equal(
        torch.cat([data.train, data.val, data.test]),
        torch.tensor(list(path.read_bytes()), dtype=torch.uint8),
    )
    assert (data.info.val_size, data.info.test_size) == (255 // 8, 127 // 8)
    cfg.val_fraction = 0
    assert load_dataset(cfg).val is None and dataset_info(cfg).val_size == 0
