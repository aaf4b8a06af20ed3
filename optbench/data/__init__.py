"""Data: where images come from (`sources`) and how they reach the model (`batches`)."""

from optbench.data.batches import Batch, DeviceBatches
from optbench.data.sources import (
    DATASETS,
    DatasetInfo,
    ImageDataset,
    ImageSplit,
    dataset_info,
    load_dataset,
)

__all__ = [
    "DATASETS",
    "Batch",
    "DatasetInfo",
    "DeviceBatches",
    "ImageDataset",
    "ImageSplit",
    "dataset_info",
    "load_dataset",
]
