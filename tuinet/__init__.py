"""tuinet: train neural networks in the terminal."""

__version__ = "0.1.0"
