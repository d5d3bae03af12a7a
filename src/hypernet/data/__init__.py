"""Datasets: scikit-learn's digits (offline default), MNIST from IDX files with download-and-verify,
task splits (split and permuted), and deterministic train/test splits."""

from hypernet.data.digits import load_digits
from hypernet.data.download import Checksum, DataError, DownloadError, MissingDataError, download
from hypernet.data.mnist import MNIST_SIZES, ChecksumError, IDXError, check_mnist, load_mnist, read_idx
from hypernet.data.splits import Dataset, TaskSet, permuted_tasks, split_tasks, train_test_split

__all__ = [
    "MNIST_SIZES",
    "Checksum",
    "ChecksumError",
    "DataError",
    "Dataset",
    "DownloadError",
    "IDXError",
    "MissingDataError",
    "TaskSet",
    "check_mnist",
    "download",
    "load_digits",
    "load_mnist",
    "permuted_tasks",
    "read_idx",
    "split_tasks",
    "train_test_split",
]
