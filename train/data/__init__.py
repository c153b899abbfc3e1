"""Datasets: the embedded synthetic set, the course's file lists and ImageFolder, decoded once."""
from .cache import Dataset, Split, load_dataset
from .loader import SplitTensors, normalize
from .sources import SYNTHETIC, DatasetError

__all__ = ["Dataset", "DatasetError", "Split", "SplitTensors", "SYNTHETIC", "load_dataset", "normalize"]
