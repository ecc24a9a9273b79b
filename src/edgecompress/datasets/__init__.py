"""Offline data: the in-memory Dataset type, the builtin data sets, and loaders for user data."""

from .base import Batch, Dataset
from .builtin import BUILTIN_DATASETS
from .loaders import as_dataset, dataset_from_arrays, load_dataset

__all__ = ["Batch", "Dataset", "BUILTIN_DATASETS", "as_dataset", "dataset_from_arrays", "load_dataset"]
