"""The data layer: datasets as in-memory uint8 tensors, and stratified nested subsets of them."""

from __future__ import annotations

from harness.data.datasets import clear_cache, load_split
from harness.data.errors import DatasetCorrupt, DatasetError, DatasetUnavailable
from harness.data.registry import DATA_ROOT_ENV, DATASETS, DatasetInfo, dataset_info, dataset_names, default_data_root
from harness.data.subsets import SubsetError, SubsetSpec, class_counts, parse_subset, split_validation, subset_indices
from harness.data.types import TensorSplit

__all__ = [
    "DATASETS",
    "DATA_ROOT_ENV",
    "DatasetCorrupt",
    "DatasetError",
    "DatasetInfo",
    "DatasetUnavailable",
    "SubsetError",
    "SubsetSpec",
    "TensorSplit",
    "class_counts",
    "clear_cache",
    "dataset_info",
    "dataset_names",
    "default_data_root",
    "load_split",
    "parse_subset",
    "split_validation",
    "subset_indices",
]
