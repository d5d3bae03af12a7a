"""Datasets: scikit-learn's digits (offline default), MNIST from IDX files with download-and-verify,
task splits (split and permuted), and deterministic train/test splits."""

from hypernet.data.digits import load_digits
from hypernet.data.download import Checksum, DataError, DownloadError, MissingDataError, download
from hypernet.data.images import ImageFunctions, fourier_features, pixel_coordinates
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
    "ImageFunctions",
    "MissingDataError",
    "TaskSet",
    "check_mnist",
    "download",
    "fourier_features",
    "load_digits",
    "load_mnist",
    "permuted_tasks",
    "pixel_coordinates",
    "read_idx",
    "split_tasks",
    "train_test_split",
]
