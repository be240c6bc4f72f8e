"""``varprobe reproduce``: the experiments behind the paper's claims, into a report directory."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..arguments import jobs, path, up_to
from ..checks import check_out
from ..exits import EXIT_OK, missing
from ..hints import add_quiet, say, shows_progress
from ..parser import subparser

__all__ = ["add", "command"]

_CLAIMS = "varprobe.claims"
#: The most seeds per experiment --seeds takes: each seed is a training run of every experiment.
MAX_SEEDS = 1000


def command(args: argparse.Namespace) -> int:
    """``varprobe reproduce``: run ``varprobe.claims.reproduce`` into ``--out``."""
    try:
        from ...claims import reproduce
    except ImportError as exc:  # that part of varprobe is not installed
        return missing(exc, _CLAIMS, "reproduce", args.command)
    out = Path(args.out)
    check_out(out, args.parser)
    reproduce(args.profile, out, args.seeds, jobs=args.jobs, progress=shows_progress(args))
    written = [str(out / name) for name in ("claims.md", "claims.json") if (out / name).exists()]
    if written:
        print(f"wrote {' and '.join(written)}")
        figures = sorted(p.name for p in out.glob("*.png"))
        say(args, f"the report is {out / 'claims.md'}; " + (
            f"its {len(figures)} figures are beside it in {out} ({', '.join(figures)}), with their captions in "
            f"{out / 'figures.md'}" if figures else f"no figure was written in {out}"))
    return EXIT_OK


#: profile -> what it runs, for --help.
_PROFILES = {
    "quick": "small scale: small nets on digits or small synthetic images, a few hundred steps, 3 seeds; meant "
             "to take at most about 5 minutes on a 2-core CPU with --jobs 2",
    "standard": "the paper's setting at laptop scale: resnet20 with the authors' layouts on digits at their native "
                "8px in 3 channels, batch 64, 300 steps, lrs 0.01/0.1/0.5, 6 seeds, every attribution control at "
                "the large lrs; about 30 minutes with --jobs 2 on a 2-core CPU; prints its estimated time first",
    "full": "the paper's settings (resnet20 and vgg on CIFAR-10 when a local copy is present, synthetic 32x32 "
            "otherwise), for a bigger machine; prints its estimated time first",
}


def add(sub: Any) -> None:
    """The ``reproduce`` parser: a profile, --out, --seeds and --jobs."""
    p = subparser(sub, "reproduce", "[--quick | --standard | --full] [--out DIR] [--seeds N]",
                  "check the paper's claims numerically; write claims.md and claims.json",
                  "Run the experiments behind every claim of the paper and write DIR/claims.md (claim, "
                  "quantity, expected, measured with a 95% confidence interval over seeds, verdict), "
                  "DIR/claims.json and the figures next to them (the training runs go to DIR/runs). Last, "
                  "stderr names the report and its figures.", command)
    profile = p.add_mutually_exclusive_group()
    for name, help in _PROFILES.items():
        profile.add_argument(f"--{name}", dest="profile", action="store_const", const=name,
                             help=f"{help} (default: {'on' if name == 'quick' else 'off'})")
    p.set_defaults(profile="quick")
    p.add_argument("--out", default="runs/reproduce", type=path, metavar="DIR",
                   help="directory of the report, figures and runs (default: %(default)s)")
    p.add_argument("--seeds", type=up_to(MAX_SEEDS, "seeds"), default=None, metavar="N",
                   help=f"number of seeds per experiment, at most {MAX_SEEDS} (default: the profile's, 3 for --quick)")
    p.add_argument("--jobs", type=jobs, default=1, metavar="N",
                   help="training runs at once (at most 1024), one worker process each (default: %(default)s)")
    add_quiet(p)
