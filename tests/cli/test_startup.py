"""The command line starts without the heavy libraries: ``--help`` of ``varprobe`` and of every
subcommand imports neither torch nor pandas (nor pyarrow or matplotlib), and the lazy packages keep
every public name and import path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "pandas", "pyarrow", "matplotlib")


def _fresh(source: str) -> str:
    """stdout of ``python -c source`` in a fresh interpreter on this checkout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", source], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("command", [[], ["run"], ["grid"], ["reproduce"], ["plot"]])
def test_help_imports_neither_torch_nor_pandas(command):
    out = _fresh(f"""
import contextlib, io, json, sys
from varprobe.cli import main
with contextlib.redirect_stdout(io.StringIO()) as text:
    try:
        main({command + ['--help']!r})
    except SystemExit as exc:
        code = exc.code
print(json.dumps({{"code": code, "help": text.getvalue(), "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
""")
    seen = json.loads(out)
    assert seen["code"] == 0 and "usage: varprobe" in seen["help"]
    assert seen["heavy"] == [], f"varprobe {' '.join(command + ['--help'])} imported {seen['heavy']}"


def test_python_m_varprobe_cli_help_imports_no_torch():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "varprobe.cli", "--help"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage: varprobe" in done.stdout
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_lazy_packages_keep_every_public_name_and_import_path():
    out = _fresh("""
import json, types
import varprobe, varprobe.experiment, varprobe.record
from varprobe import Probe, spp, load_run, load_runs, plot
import varprobe.experiment.grid as grid_module_path
from varprobe.experiment import RunConfig, grid, run, runner, config
from varprobe.record import Run, RunWriter, RunLockedError, reader
names = {p.__name__: sorted(n for n in p.__all__ if getattr(p, n, None) is None) for p in
         (varprobe, varprobe.experiment, varprobe.record)}
print(json.dumps({"missing": names, "grid": [type(grid).__name__, type(varprobe.experiment.grid).__name__,
                                             type(grid_module_path).__name__],
                  "modules": [type(runner).__name__, type(config).__name__, type(reader).__name__],
                  "dir": sorted(set(varprobe.experiment.__all__) - set(dir(varprobe.experiment)))}))
""")
    seen = json.loads(out)
    assert seen["missing"] == {"varprobe": [], "varprobe.experiment": [], "varprobe.record": []}
    assert seen["grid"] == ["function"] * 3  # the function, though the submodule of that name was imported
    assert seen["modules"] == ["module"] * 3
    assert seen["dir"] == []


def test_float32_bounds_of_the_config_are_torchs():
    import torch

    from varprobe.experiment.config import FLOAT32_MAX, FLOAT32_TINY

    assert FLOAT32_MAX == float(torch.finfo(torch.float32).max)
    assert FLOAT32_TINY == float(torch.finfo(torch.float32).tiny)
