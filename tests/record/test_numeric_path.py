"""meta.json records the floating-point path of torch's CPU kernels, equal to torch's own answers,
without ever importing torch for it."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

from varprobe.record import RunWriter
from varprobe.record.meta import ISA_FLAGS, MANAGED_KEYS, NUMERIC_ENV, numeric_path

ROOT = Path(__file__).resolve().parents[2]


def _write(path: Path) -> dict:
    with RunWriter(path, {"seed": 0}) as w:
        w.append(pd.DataFrame({"step": [0], "layer": ["conv"], "depth": [0], "mode": ["train"],
                               "module_type": ["Conv2d"], "role": ["conv"], "quantity": ["out.var"],
                               "value": [1.0]}))
    return json.loads((path / "meta.json").read_text())


def test_meta_json_records_the_numeric_path_torch_reports(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    try:
        torch.set_num_threads(1)
        got = _write(tmp_path / "run")["numeric_path"]
    finally:
        torch.set_num_threads(threads)
    config = torch.__config__.show()
    assert got["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert got["torch"] == torch.__version__
    assert got["threads"] == 1 and got["interop_threads"] == torch.get_num_interop_threads()
    assert got["onednn_enabled"] is torch.backends.mkldnn.enabled
    assert got["deterministic"] is torch.are_deterministic_algorithms_enabled()
    blas = re.search(r"BLAS_INFO=(\w+)", config)
    assert got["blas"] == (blas.group(1) if blas else None)
    onednn = re.search(r"(?:MKL-DNN|oneDNN) (v[\d.]+)", config)
    assert (onednn.group(1) in got["onednn"]) if onednn else got["onednn"] is None
    if got["blas"] == "mkl":
        assert got["blas_library"] and got["blas_library"] in config and "Math Kernel Library" in got["blas_library"]
    assert got["env"]["MKL_CBWR"] == "AVX2" and set(got["env"]) <= set(NUMERIC_ENV)
    assert "ATEN_CPU_CAPABILITY" not in got["env"]
    assert "numeric_path" in MANAGED_KEYS
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        flags = set(next(x for x in cpuinfo.read_text().splitlines() if x.startswith("flags")).split(":")[1].split())
        assert got["cpu_isa"] == [x for x in ISA_FLAGS if x in flags]
        assert got["cpu"] in cpuinfo.read_text()


def test_numeric_path_never_imports_torch(tmp_path):
    """A process that did not import torch records null, and writing a run does not import it."""
    code = ("import sys, pandas as pd\n"
            "from varprobe.record import RunWriter\n"
            "from varprobe.record.meta import numeric_path\n"
            f"w = RunWriter({str(tmp_path / 'run')!r}, {{'seed': 0}}); w.close()\n"
            "print(numeric_path(), 'torch' in sys.modules)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    assert out.stdout.split() == ["None", "False"]
    assert json.loads((tmp_path / "run" / "meta.json").read_text())["numeric_path"] is None
    assert numeric_path()["torch"] == torch.__version__  # this process imported it
