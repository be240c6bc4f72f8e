"""Per-step cost of the Lightning and Hugging Face ProbeCallbacks against the plain-loop probe.

A tiny Hugging Face ResNet (ResNetConfig, random init) on random 3x16x16 images, batch 8, SGD,
one thread. Each setting runs STEPS optimizer steps; the step time is the median interval between
consecutive optimizer steps (the first WARM dropped). Settings are interleaved over REPS rounds.
Run: python benchmarks/integrations.py   (about a minute; the machine may be shared: read ratios)
"""
from __future__ import annotations

import logging
import statistics
import tempfile
import time
import warnings

import torch
import transformers
import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset, TensorDataset

import varprobe
from varprobe.integrations import huggingface as hfp
from varprobe.integrations import lightning as plp

STEPS, WARM, REPS, BATCH = 25, 3, 3, 8
warnings.filterwarnings("ignore")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
transformers.logging.set_verbosity_error()
torch.set_num_threads(1)
X, Y = torch.randn(BATCH * STEPS, 3, 16, 16), torch.randint(0, 3, (BATCH * STEPS,))


def model():
    torch.manual_seed(0)
    return transformers.ResNetForImageClassification(transformers.ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=3))


def median_step(stamps):
    d = [b - a for a, b in zip(stamps, stamps[1:])][WARM:]
    return statistics.median(d)


def plain(probed, out):
    m = model().train()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    probe = varprobe.Probe(m, out=out).attach() if probed else None
    stamps = []
    for i in range(STEPS):
        loss = m(pixel_values=X[i * BATCH:(i + 1) * BATCH], labels=Y[i * BATCH:(i + 1) * BATCH]).loss
        loss.backward()
        stamps.append(time.perf_counter())
        if probe:
            probe.step(loss=loss)
        opt.step()
        opt.zero_grad()
    if probe:
        probe.close()
    return median_step(stamps)


class Stamp(pl.Callback):
    def __init__(self):
        self.t = []

    def on_before_optimizer_step(self, *a):
        self.t.append(time.perf_counter())


class Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = model()

    def training_step(self, batch, i):
        return self.net(pixel_values=batch[0], labels=batch[1]).loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def lightning(probed, out):
    stamp = Stamp()
    cbs = [plp.ProbeCallback(out, module="net"), stamp] if probed else [stamp]
    pl.Trainer(accelerator="cpu", max_steps=STEPS, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, callbacks=cbs).fit(Module(), DataLoader(TensorDataset(X, Y), batch_size=BATCH))
    return median_step(stamp.t)


class HFStamp(transformers.TrainerCallback):
    def __init__(self):
        self.t = []

    def on_pre_optimizer_step(self, *a, **k):
        self.t.append(time.perf_counter())


class Images(Dataset):
    def __len__(self):
        return len(Y)

    def __getitem__(self, i):
        return {"pixel_values": X[i], "labels": Y[i]}


def huggingface(probed, out):
    stamp = HFStamp()
    args = transformers.TrainingArguments(output_dir=out + "-hf", max_steps=STEPS, per_device_train_batch_size=BATCH,
                                          optim="sgd", learning_rate=0.05, report_to=[], use_cpu=True,
                                          save_strategy="no", logging_strategy="no", disable_tqdm=True)
    cbs = [hfp.ProbeCallback(out), stamp] if probed else [stamp]
    transformers.Trainer(model=model(), args=args, train_dataset=Images(), callbacks=cbs).train()
    return median_step(stamp.t)


if __name__ == "__main__":
    times: dict[str, list[float]] = {}
    tmp = tempfile.mkdtemp()
    for r in range(REPS):
        for name, fn in (("plain", plain), ("lightning", lightning), ("huggingface", huggingface)):
            for probed in (False, True):
                times.setdefault(f"{name}{' probed' if probed else ''}", []).append(fn(probed, f"{tmp}/{name}{probed}{r}"))
    for k, v in times.items():
        print(f"{k:22s} {1e3 * statistics.median(v):7.2f} ms/step  (reps: {', '.join(f'{1e3 * x:.2f}' for x in v)})")
