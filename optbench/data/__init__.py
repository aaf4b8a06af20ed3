"""Data: where images and text come from (`sources`, `text`) and how they reach the model
(`batches`, `text.TokenWindows`), held whole on the training device."""

from optbench.data.batches import Batch, DeviceBatches
from optbench.data.info import DatasetInfo, ImageSplit
from optbench.data.sources import DATASETS, ImageDataset, dataset_info, load_dataset
from optbench.data.text import TextDataset

__all__ = [
    "DATASETS",
    "Batch",
    "DatasetInfo",
    "DeviceBatches",
    "ImageDataset",
    "ImageSplit",
    "TextDataset",
    "dataset_info",
    "load_dataset",
]
