"""The ``varprobe`` command line (entry point ``varprobe = varprobe.cli:main``)."""
from .main import build_parser, main

__all__ = ["main", "build_parser"]
