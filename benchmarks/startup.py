"""Start-up time of the command line: wall time of ``varprobe --help`` and of ``import varprobe``.

Each command runs in a fresh interpreter (``python -c ...`` with ``PYTHONPATH`` set to a
checkout), ``--runs`` times, the checkouts interleaved round by round so that they share the
machine's load; the table gives the median wall time and, per checkout, the heavy libraries the
``--help`` process imported. Pass several checkouts to compare them in one run, e.g. this one
against a worktree of the commit before a change::

    git worktree add /tmp/varprobe-before <commit>
    .venv/bin/python benchmarks/startup.py --runs 15 /tmp/varprobe-before .

Nothing here imports torch: the script measures only its subprocesses.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["COMMANDS", "HEAVY", "measure", "heavy_imports", "main"]

#: name -> Python source run in a fresh interpreter.
COMMANDS = {
    "varprobe --help": "import sys\nfrom varprobe.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    "import varprobe": "import varprobe",
}
#: The libraries whose import the start-up should not pay for.
HEAVY = ("torch", "pandas", "pyarrow", "matplotlib", "numpy")


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(root)}


def measure(root: Path, source: str) -> float:
    """Wall seconds of one fresh ``python -c source`` with ``root`` on the path."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", source], env=_env(root), cwd=root, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def heavy_imports(root: Path) -> list[str]:
    """The :data:`HEAVY` libraries in ``sys.modules`` after ``varprobe --help`` in ``root``."""
    probe = COMMANDS["varprobe --help"] + (
        f"\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", probe], env=_env(root), cwd=root, check=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True).stderr
    return out.split()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="*", type=Path, default=[Path(__file__).resolve().parents[1]],
                        help="checkouts to measure (default: this one)")
    parser.add_argument("--runs", type=int, default=15, help="fresh interpreters per command and checkout")
    args = parser.parse_args(argv)
    roots = [r.resolve() for r in args.roots]
    times: dict[tuple[Path, str], list[float]] = {(r, c): [] for r in roots for c in COMMANDS}
    for root in roots:  # one warm-up each: the first run reads the files from disk
        for source in COMMANDS.values():
            measure(root, source)
    for _ in range(args.runs):
        for root in roots:
            for name, source in COMMANDS.items():
                times[root, name].append(measure(root, source))
    print(f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}; median of {args.runs} fresh interpreters\n")
    print("| checkout | " + " | ".join(f"`{c}` (s)" for c in COMMANDS) + " | imported by `--help` |")
    print("|---" * (len(COMMANDS) + 2) + "|")
    for root in roots:
        cells = [f"{statistics.median(times[root, c]):.3f}" for c in COMMANDS]
        print(f"| {root} | " + " | ".join(cells) + f" | {', '.join(heavy_imports(root)) or 'none of ' + ', '.join(HEAVY)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
