"""Datasets: built-in, synthetic and user data, loaded, cleaned, split and normalized for the engine."""

from tuinet.data.dataset import Dataset
from tuinet.data.loader import builtin_datasets, load_dataset
from tuinet.data.normalize import Normalizer
from tuinet.data.render import render_image, render_image_text
from tuinet.data.splits import shuffled_batches

__all__ = ["Dataset", "Normalizer", "builtin_datasets", "load_dataset", "render_image", "render_image_text",
           "shuffled_batches"]
