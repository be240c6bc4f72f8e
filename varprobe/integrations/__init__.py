"""Callbacks that put a Probe inside the trainers researchers already use.

``varprobe.integrations.lightning.ProbeCallback`` (PyTorch Lightning, ``varprobe[lightning]``) and
``varprobe.integrations.huggingface.ProbeCallback`` (the Hugging Face ``Trainer``,
``varprobe[hf]``). Each submodule imports its framework; this package imports neither, so
``import varprobe.integrations`` works without them.
"""
__all__: list[str] = []
