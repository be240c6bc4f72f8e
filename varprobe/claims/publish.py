"""Publish a ``reproduce`` report's figures to the docs: ``python -m varprobe.claims.publish OUT``.

Copies the figures and ``captions.json`` that :func:`varprobe.claims.report.write_figures` wrote
in ``OUT`` to ``docs/figures`` and replaces README's figure table (between :data:`BEGIN` and
:data:`END`) with :func:`readme_block` of those captions, so every README caption is the one
computed from the runs that drew its figure. Nothing else in the README is touched; a README
without the markers is refused (exit 2), never rewritten.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from .report import CAPTIONS_FILE, figure_table

__all__ = ["BEGIN", "END", "readme_block", "publish", "main"]

BEGIN = "<!-- figures: written by python -m varprobe.claims.publish from captions.json; do not edit -->"
END = "<!-- /figures -->"


def readme_block(captions: dict[str, str], figures: Path, prefix: str = "docs/figures/") -> str:
    """The README's figure section: the markers around :func:`figure_table` of ``captions``, with a
    link to the standard profile's figure where ``figures/standard/<name>`` exists."""
    others = {n: f"{prefix}standard/{n}" for n in captions if (Path(figures) / "standard" / n).exists()}
    return f"{BEGIN}\n{figure_table(captions, prefix, 'quick', others)}{END}"


def publish(out: Path, figures: Path, readme: Path) -> dict[str, str]:
    """Copy ``out``'s figures and captions to ``figures``, rewrite ``readme``'s figure block.
    ValueError (nothing written) when ``out`` has no captions.json or ``readme`` lacks the markers."""
    out, figures, readme = Path(out), Path(figures), Path(readme)
    src = out / CAPTIONS_FILE
    if not src.exists():
        raise ValueError(f"{src} does not exist: run `varprobe reproduce --out {out}` first")
    captions = json.loads(src.read_text())
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme} has no figure block ({BEGIN!r} ... {END!r}); add the markers first")
    missing = [n for n in captions if not (out / n).exists()]
    if missing:
        raise ValueError(f"{out} lacks the figure(s) {', '.join(missing)} named in {CAPTIONS_FILE}")
    figures.mkdir(parents=True, exist_ok=True)
    for name in captions:
        shutil.copyfile(out / name, figures / name)
    shutil.copyfile(src, figures / CAPTIONS_FILE)
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(head + readme_block(captions, figures) + tail)
    return captions


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m varprobe.claims.publish OUT  (OUT: a `varprobe reproduce --out` directory)",
              file=sys.stderr)
        return 2
    try:
        captions = publish(Path(args[0]), Path("docs/figures"), Path("README.md"))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"published {len(captions)} figures and their captions to docs/figures and README.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
