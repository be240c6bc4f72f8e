"""``Tap``: an identity module that marks a tensor of a user model (typically a residual add) for probes."""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["Tap", "TAP_KINDS"]

TAP_KINDS = ("block", "branch")


class Tap(nn.Identity):
    """Identity ``y = x`` whose input a Probe records, under the name of the Tap's parent module.

    ``kind="block"`` records ``block.out.*`` (put it on the result of a residual add: the residual
    stream), ``kind="branch"`` records ``branch.out.*`` (put it on the branch before the add)::

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.f = nn.Sequential(...)
                self.tap_branch, self.tap_out = Tap("branch"), Tap("block")

            def forward(self, x):
                return self.tap_out(x + self.tap_branch(self.f(x)))

    Rows carry the parent's name (here the Block's), so they line up with the package's own
    ``ResidualBlock``. Without a probe a Tap costs one Python call. Alternatively pass
    ``Probe(model, blocks={Block: "f"})`` to mark a block type and the name of its branch child.
    """

    def __init__(self, kind: str = "block") -> None:
        super().__init__()
        if kind not in TAP_KINDS:
            raise ValueError(f"Tap kind must be one of {TAP_KINDS}, got {kind!r}")
        self.kind = kind

    def forward(self, x: Tensor) -> Tensor:
        return x

    def extra_repr(self) -> str:
        return repr(self.kind)
