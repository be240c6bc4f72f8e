"""The Hugging Face ProbeCallback in a real transformers.Trainer (CPU, a tiny ResNet built from a
config with random weights: no download)."""
from __future__ import annotations

import copy

import pytest

transformers = pytest.importorskip("transformers", reason="needs the hf extra: pip install 'varprobe[hf]'")
pytest.importorskip("accelerate", reason="needs the hf extra (accelerate): pip install 'varprobe[hf]'")
import torch  # noqa: E402
from torch import nn  # noqa: E402

import varprobe  # noqa: E402
from varprobe.integrations.huggingface import ProbeCallback  # noqa: E402

from .reference import assert_same_records, capture_batches, plain_loop_first_step  # noqa: E402

LR = 0.05


def tiny_resnet():
    cfg = transformers.ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                    layer_type="basic", num_labels=3)
    return transformers.ResNetForImageClassification(cfg)


class Images(torch.utils.data.Dataset):
    def __init__(self, n=16):
        g = torch.Generator().manual_seed(2)
        self.x, self.y = torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def loss_fn(model, x, y):
    return model(pixel_values=x, labels=y).loss


def train(tmp_path, model, steps, accumulate, callbacks, **kw):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), max_steps=steps, per_device_train_batch_size=4,
        gradient_accumulation_steps=accumulate, learning_rate=LR, lr_scheduler_type="constant",
        optim="sgd", max_grad_norm=0.0, report_to=[], use_cpu=True, save_strategy="no",
        logging_strategy="no", dataloader_num_workers=0, seed=0, disable_tqdm=True, **kw)
    data = Images()
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=list(callbacks))
    trainer.train()
    return data, trainer


@pytest.mark.parametrize("accumulate", [1, 2])
def test_one_record_per_optimizer_step_equal_to_the_plain_loop(tmp_path, accumulate):
    torch.manual_seed(0)
    model = tiny_resnet()
    reference = copy.deepcopy(model)
    seen, handle = capture_batches(model)
    cb = ProbeCallback(tmp_path / "run", flush_every=1)
    data, trainer = train(tmp_path, model, 2, accumulate, [cb])
    handle.remove()
    run = varprobe.load_run(tmp_path / "run")
    assert run.meta["status"] == "finished"
    train_rows = run.frame[run.frame["mode"] == "train"]
    assert sorted(train_rows["step"].unique()) == [0, 1]
    assert len(seen) == 2 * accumulate
    names = {n for n, _ in reference.named_modules()}
    assert set(train_rows["layer"]) - {""} <= names
    # replay the trainer's micro-batches: find each one's labels in the dataset
    index = {tuple(x.flatten()[:4].tolist()): i for i, x in enumerate(data.x)}
    micro = []
    for x in seen[:accumulate]:
        rows = [index[tuple(r.flatten()[:4].tolist())] for r in x]
        micro.append((x, data.y[rows]))
    # transformers 5 divides each micro-batch loss by the accumulation steps unless the model takes
    # loss kwargs (ResNetForImageClassification has **kwargs, and ignores num_items_in_batch): the
    # gradient it backpropagates is then that of the SUM of the micro-batch mean losses.
    scale = 1.0 if trainer.model_accepts_loss_kwargs else 1.0 / accumulate
    want = plain_loop_first_step(reference, micro, loss_fn, LR, tmp_path, backward_scale=scale, flush_every=1)
    got = train_rows[train_rows["step"] == 0]
    assert "loss" in set(got["quantity"])
    assert_same_records(got, want)
