"""Residual block with the official PWS code's ordering: ReLU at the branch input, none after the add."""
from __future__ import annotations

from torch import Tensor, nn

from ..layouts import register_layout

__all__ = ["ResidualBlock"]


class ResidualBlock(nn.Module):
    """out = branch(relu(x)) + shortcut(relu(x) if shortcut is a projection else x).

    ``branch`` and ``shortcut`` are child modules; ``shortcut`` is ``None`` for the identity. The
    identity path carries x itself, not relu(x), and nothing is applied after the add, so the
    residual stream keeps an approximately zero mean (paper-notes 2.7). Probes record the output of
    the block (the residual stream) and of ``branch`` (the branch before the add).
    """

    def __init__(self, branch: nn.Module, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.branch = branch
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        a = self.act(x)
        identity = x if self.shortcut is None else self.shortcut(a)
        return self.branch(a) + identity


# Probes record the block's output (block.out.*) and its branch's (branch.out.*) by default.
register_layout(ResidualBlock, "block", weight=None, branch="branch")
