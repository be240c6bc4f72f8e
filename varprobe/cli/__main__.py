"""``python -m varprobe.cli``: the same as the ``varprobe`` command."""
import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())
