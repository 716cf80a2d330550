"""Developer benchmarks, run from the repository root: ``python -m benchmarks.cnn_recipe``, ``python -m benchmarks.app_cost``."""
