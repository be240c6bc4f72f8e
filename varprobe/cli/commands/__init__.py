"""The subcommands of ``varprobe``: each module adds its parser (``add``) and runs it (``command``)."""
from . import grid, plot, reproduce, run, sweep

__all__ = ["run", "grid", "sweep", "reproduce", "plot"]
