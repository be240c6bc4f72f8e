"""varprobe: variance-transmission analysis for PyTorch."""
