"""Data layer: the MedMNIST registry, file resolution and download, loading and validation."""

from kr.data.dataset import ImageDataset, Split, load_dataset
from kr.data.registry import MEDMNIST, DatasetInfo, get_info

__all__ = ["MEDMNIST", "DatasetInfo", "ImageDataset", "Split", "get_info",
           "load_dataset"]
