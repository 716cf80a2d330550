"""What `tuinet bench` measures: training throughput side by side with PyTorch, and per-layer timings."""
