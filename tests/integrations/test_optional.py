"""varprobe imports, probes and writes runs with none of the integration extras installed."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

BLOCKED = ("lightning", "lightning.pytorch", "pytorch_lightning", "transformers", "accelerate",
           "tensorboard", "torch.utils.tensorboard", "wandb")


def test_varprobe_works_without_any_extra(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        for name in {BLOCKED!r}:
            sys.modules[name] = None  # any import of it raises ImportError
        import torch
        import varprobe, varprobe.sinks, varprobe.integrations, varprobe.probe, varprobe.models, varprobe.layers
        model = torch.nn.Sequential(torch.nn.Linear(3, 2))
        with varprobe.Probe(model, out={str(tmp_path / 'run')!r}) as p:
            model(torch.randn(4, 3)).sum().backward()
            p.step()
        assert len(varprobe.load_run({str(tmp_path / 'run')!r}).frame)
        for mod, extra in (("varprobe.integrations.lightning", "lightning"),
                           ("varprobe.integrations.huggingface", "hf")):
            try:
                __import__(mod)
            except ImportError as exc:
                assert extra in str(exc), exc
            else:
                raise AssertionError(mod + " imported without its extra")
        try:
            varprobe.sinks.TensorBoardSink({str(tmp_path / 'tb')!r})
        except ImportError as exc:
            assert "tensorboard" in str(exc), exc
        else:
            raise AssertionError("TensorBoardSink without tensorboard")
        try:
            varprobe.sinks.WandbSink()
        except ImportError as exc:
            assert "wandb" in str(exc), exc
        else:
            raise AssertionError("WandbSink without wandb")
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]
