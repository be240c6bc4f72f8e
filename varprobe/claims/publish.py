"""Publish a ``reproduce`` report's figures to the docs: ``python -m varprobe.claims.publish OUT``.

Copies the figures and ``captions.json`` that :func:`varprobe.claims.report.write_figures` wrote
in ``OUT`` to ``docs/figures`` (a quick report) or ``docs/figures/<profile>`` (a standard or full
report, :data:`BESIDE`, read from ``OUT/claims.json``) and replaces the figure section of the gallery page
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

__all__ = ["BEGIN", "END", "BESIDE", "GALLERY", "gallery_block", "profile_of", "publish", "main"]

BEGIN = "<!-- figures: written by python -m varprobe.claims.publish from captions.json; do not edit -->"
END = "<!-- /figures -->"


#: Profiles whose figures are published beside the gallery's own (``docs/figures/<profile>``); every
#: other report (quick, and the test profile tiny) is the gallery's.
BESIDE = ("standard", "full")
#: The page whose figure section :func:`main` rewrites, relative to the repository's root.
GALLERY = Path("docs/gallery.md")


def _profile_captions(figures: Path, profile: str) -> dict[str, str]:
    """The captions of ``profile``'s published figures (``figures/<profile>/captions.json``), or none."""
    path = Path(figures) / profile / CAPTIONS_FILE
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def gallery_block(captions: dict[str, str], figures: Path, prefix: str = "figures/") -> str:
    """The gallery's figure section: the markers around one section per figure of ``captions`` (the
    quick profile's), the figure at the page's width (a link to the full-size file) above its
    caption; where the standard profile's figure ``figures/standard/<name>`` exists, a paragraph
    with a link to it and its own caption from ``figures/standard/captions.json`` (each caption
    speaks of the runs of its own profile only)."""
    standard = _profile_captions(figures, "standard")
    parts = []
    for name, text in captions.items():
        stem = Path(name).stem
        part = f"## {stem}\n\n[![{stem}]({prefix}{name})]({prefix}{name})\n\n{text}\n"
        if (Path(figures) / "standard" / name).exists():
            other = standard.get(name, "its caption is not published (no standard/captions.json entry)")
            part += f"\n[Standard profile]({prefix}standard/{name}): {other}\n"
        parts.append(part)
    return f"{BEGIN}\n" + "\n".join(parts) + END


def profile_of(out: Path) -> str:
    """The profile of the report in ``out`` (``claims.json``'s ``profile.name``); "quick" where
    ``out`` has no readable claims.json."""
    try:
        name = json.loads((Path(out) / "claims.json").read_bytes())["profile"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return "quick"
    return name if isinstance(name, str) and name else "quick"


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
    """Copy ``out``'s figures and captions to ``figures`` (a quick report's) or ``figures/<profile>``
    (a profile of :data:`BESIDE`, :func:`profile_of`), rewrite ``page``'s figure section (:func:`gallery_block`
    of the quick captions in ``figures``, its image links relative to ``page``'s folder).

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
    profile = profile_of(out)
    sub = f"{profile}/" if profile in BESIDE else ""
    for name in captions:
        inside(figures, sub + name, f"figure name in {out / CAPTIONS_FILE}")
    docs = OutputDir(figures, "figures")
    docs.check([sub + n for n in (*captions, CAPTIONS_FILE)])
    for name in captions:
        docs.write(sub + name, (out / name).read_bytes())
    docs.write(sub + CAPTIONS_FILE, (out / CAPTIONS_FILE).read_bytes())
    quick = captions if not sub else _profile_captions(figures, "")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    prefix = f"{Path(os.path.relpath(figures, page.parent)).as_posix()}/"
    atomic_write(page, (head + gallery_block(quick, figures, prefix) + tail).encode("utf-8"))
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
    profile = profile_of(Path(args[0]))
    where = "docs/figures" + (f"/{profile}" if profile in BESIDE else "")
    print(f"published {len(captions)} figures and their captions to {where} and {GALLERY}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
