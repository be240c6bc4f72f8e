"""How well ``varprobe.analysis.compare`` predicts each conv layer at initialization (issue 15).

A 6-conv Kaiming plain net (``make_conv("plain", ...)``, 3x3, padding 1, widths 3-32-32-64-64-64-64,
ReLU), one training forward of a batch of 128 images of 32 px, probed with every quantity. Prints,
per prediction ("pooled": one pooled input mean/variance, padding ignored; "best": per-channel,
padding-aware), each layer's rel_error = measured / predicted - 1 and the median |rel_error| over
the 6 layers.

    python benchmarks/theory_at_init.py [gauss|digits] [seed]

gauss (default): SYNTHETIC i.i.d. N(0, 1) input; digits: the digits data upsampled to 32 px in 3
channels (real images, correlated neighbouring pixels). About 10 s on one CPU core.
"""
import sys

import torch
from torch import nn

from varprobe.analysis import compare
from varprobe.layers import make_conv
from varprobe.probe import Probe


def main(data: str = "gauss", seed: int = 0) -> None:
    torch.manual_seed(seed)
    widths = [3, 32, 32, 64, 64, 64, 64]
    model = nn.Sequential(*[m for a, b in zip(widths[:-1], widths[1:])
                            for m in (make_conv("plain", a, b, 3, padding=1), nn.ReLU())])
    if data == "gauss":
        x = torch.randn(128, 3, 32, 32)
    elif data == "digits":
        from varprobe.experiment.config import load_data
        x = load_data("digits", 32, 0, None, None, 3).x_train[:128]
    else:
        raise SystemExit(f"unknown data {data!r}; valid: gauss, digits")
    probe = Probe(model)
    with probe:
        model(x).sum().backward()
        probe.step()
    frame = probe.frame()
    for prediction in ("pooled", "best"):
        c = compare(frame, prediction=prediction)
        print(f"{prediction}: {', '.join(sorted(set(c['prediction'])))}")
        print(c.pivot_table(index="depth", columns="quantity", values="rel_error").round(4).to_string())
        med = c.assign(abs=c["rel_error"].abs()).groupby("quantity")["abs"].median()
        print("median |rel_error|:", {q: round(float(v), 4) for q, v in med.items()}, "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "gauss", int(sys.argv[2]) if len(sys.argv) > 2 else 0)
