"""Publish a ``reproduce`` report's figures to the docs: ``python -m varprobe.claims.publish OUT``.

Copies the figures and ``captions.json`` that :func:`varprobe.claims.report.write_figures` wrote
in ``OUT`` to ``docs/figures`` and replaces the figure section of the gallery page
``docs/gallery.md`` (between :data:`BEGIN` and :data:`END`) with :func:`gallery_block` of those
captions, so every caption there is the one computed from the runs that drew its figure. Nothing
else in the page is touched; a page without the markers is refused (exit 2), never rewritten.

Everything is checked before anything is written: ``captions.json`` must be an object of figure
name -> caption string; each figure name must stay inside ``OUT`` and inside ``docs/figures``
(no ``..``, no absolute path: :func:`~varprobe.record.files.inside`); ``docs/figures`` is an
:class:`~varprobe.record.files.OutputDir`, so a figure there that varprobe did not write (or that
was edited since) is never replaced. Every mistake is one line and exit 2.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..record.files import OutputDir, WriteRefused, atomic_write, inside
from .report import CAPTIONS_FILE, figure_table

__all__ = ["BEGIN", "END", "GALLERY", "gallery_block", "publish", "main"]

BEGIN = "<!-- figures: written by python -m varprobe.claims.publish from captions.json; do not edit -->"
END = "<!-- /figures -->"


#: The page whose figure section :func:`main` rewrites, relative to the repository's root.
GALLERY = Path("docs/gallery.md")


def gallery_block(captions: dict[str, str], figures: Path, prefix: str = "figures/") -> str:
    """The gallery's figure section: the markers around one section per figure of ``captions``,
    the figure at the page's width (a link to the full-size file) above its caption, with a link
    to the standard profile's figure where ``figures/standard/<name>`` exists."""
    parts = []
    for name, text in captions.items():
        other = Path(figures) / "standard" / name
        extra = f" ([standard profile]({prefix}standard/{name}))" if other.exists() else ""
        stem = Path(name).stem
        parts.append(f"## {stem}\n\n[![{stem}]({prefix}{name})]({prefix}{name})\n\n{text}{extra}\n")
    return f"{BEGIN}\n" + "\n".join(parts) + END


def _read_captions(src: Path, out: Path) -> dict[str, str]:
    """``captions.json`` checked: an object of figure names (inside ``out``, present) -> strings."""
    if not src.is_file():
        raise ValueError(f"{src} does not exist: run `varprobe reproduce --out {out}` first")
    try:
        captions = json.loads(src.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{src} is not JSON ({exc})") from None
    if not isinstance(captions, dict):
        raise ValueError(f"{src} must be a JSON object of figure name -> caption, got a {type(captions).__name__}")
    bad = [f"{k!r}: {type(v).__name__}" for k, v in captions.items() if not isinstance(v, str)]
    if bad:
        raise ValueError(f"{src}: every caption must be a string; not: {', '.join(bad[:5])}")
    for name in captions:
        inside(out, name, f"figure name in {src}")
        if Path(name).suffix.lower() not in (".png", ".svg", ".pdf"):
            raise ValueError(f"{src}: figure name {name!r} is not a .png, .svg or .pdf file")
    missing = [n for n in captions if not (out / n).is_file()]
    if missing:
        raise ValueError(f"{out} lacks the figure(s) {', '.join(missing)} named in {CAPTIONS_FILE}")
    return captions


def publish(out: Path, figures: Path, page: Path) -> dict[str, str]:
    """Copy ``out``'s figures and captions to ``figures``, rewrite ``page``'s figure section
    (:func:`gallery_block`, its image links relative to ``page``'s folder).

    Raises ValueError (nothing written) when ``out`` has no valid captions.json, a figure name
    leaves ``out`` or ``figures``, a figure is missing, or ``page`` is missing or lacks the
    markers; :class:`~varprobe.record.files.WriteRefused` when a file in ``figures`` was not
    written by varprobe."""
    out, figures, page = Path(out), Path(figures), Path(page)
    captions = _read_captions(out / CAPTIONS_FILE, out)
    if not page.is_file():
        raise ValueError(f"{page} does not exist: run publish from the repository's root, where {GALLERY} is")
    text = page.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise ValueError(f"{page} has no figure block ({BEGIN!r} ... {END!r}); add the markers first")
    for name in captions:
        inside(figures, name, f"figure name in {out / CAPTIONS_FILE}")
    docs = OutputDir(figures, "figures")
    docs.check([*captions, CAPTIONS_FILE])
    for name in captions:
        docs.write(name, (out / name).read_bytes())
    docs.write(CAPTIONS_FILE, (out / CAPTIONS_FILE).read_bytes())
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    prefix = f"{Path(os.path.relpath(figures, page.parent)).as_posix()}/"
    atomic_write(page, (head + gallery_block(captions, figures, prefix) + tail).encode("utf-8"))
    return captions


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m varprobe.claims.publish OUT  (OUT: a `varprobe reproduce --out` directory)",
              file=sys.stderr)
        return 2
    try:
        captions = publish(Path(args[0]), Path("docs/figures"), GALLERY)
    except (ValueError, WriteRefused) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"published {len(captions)} figures and their captions to docs/figures and {GALLERY}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
