"""Machine description printed above every benchmark table."""
from __future__ import annotations

import os
import platform

import torch


def machine_info() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}; {os.cpu_count()} cores; torch {torch.__version__} ({torch.get_num_threads()} threads); "
            f"Python {platform.python_version()}; {platform.system()} {platform.machine()}")
