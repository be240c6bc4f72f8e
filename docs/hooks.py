"""MkDocs hooks: the pages that exist as data elsewhere in the repository, generated at build time.

- ``index.md`` is README.md, its ``docs/`` links made relative to the site;
- ``notebooks/`` holds notebooks/README.md (as the section's index) and every ``notebooks/*.ipynb``,
  rendered by mkdocs-jupyter from their committed outputs (``execute: false``);
- a page line ``<!-- generate: quantities -->`` becomes the quantity tables of
  :mod:`varprobe.vocabulary`, ``<!-- generate: cli -->`` the help of every ``varprobe`` subcommand
  from :func:`varprobe.cli.main.build_parser`, ``<!-- include: PATH -->`` the markdown file PATH
  of the repository (its headings one level down), and ``<!-- api: PACKAGE -->`` the API reference
  of PACKAGE: every name of its ``__all__``, documented where it is defined under the name it is
  imported by (a name defined in another documented package links to that package's page).
"""
from __future__ import annotations

import inspect
import io
import os
import re
import sys
from contextlib import redirect_stdout
from importlib import import_module
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

_DIRECTIVE = re.compile(r"^<!-- (generate|include|api): (\S+) -->$", re.MULTILINE)


def readme_page(text: str) -> str:
    """README.md as the site's home page: links into ``docs/`` point at the pages themselves, the
    link to notebooks/README.md at the notebooks' index."""
    return re.sub(r"\]\(docs/", "](", text).replace("](notebooks/README.md)", "](notebooks/index.md)")


@event_priority(100)  # before mkdocs-jupyter turns .ipynb files into pages
def on_files(files: Files, config) -> Files:
    """Add the home page, the notebooks and their index to the site's files."""
    files.append(File.generated(config, "index.md", content=readme_page((REPO / "README.md").read_text())))
    files.append(File.generated(config, "notebooks/index.md", content=(REPO / "notebooks" / "README.md").read_text()))
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        files.append(File(f"notebooks/{nb.name}", src_dir=str(REPO), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace each ``<!-- generate: NAME -->`` / ``<!-- include: PATH -->`` line with its text."""
    def replace(m: re.Match) -> str:
        kind, name = m.groups()
        if kind == "include":
            return _demote((REPO / name).read_text())
        if kind == "api":
            return api(name)
        if name not in GENERATORS:
            raise ValueError(f"{page.file.src_uri}: unknown generator {name!r}; valid: {', '.join(GENERATORS)}")
        return GENERATORS[name]()
    return _DIRECTIVE.sub(replace, markdown)


def _demote(text: str) -> str:
    """Markdown ``text`` with every ATX heading one level down, outside code fences."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        out.append("#" + line if not fenced and re.match(r"#{1,5} ", line) else line)
    return "\n".join(out) + "\n"


# -- generators --------------------------------------------------------------------------------------
#: Quantity families in the order the page lists them: prefix -> heading.
FAMILIES = {
    "in.": "Layer input", "out.": "Layer output", "block.out.": "Residual stream (block output)",
    "branch.out.": "Residual branch", "grad_": "Gradients of activations", "w.": "Raw weight",
    "k.": "Effective kernel", "dec.": "Where a conv's output variance comes from", "gw.": "Shift of the average gradient",
    "bn.": "BatchNorm batch vs running statistics", "norm.": "Norm layer parameters", "": "Step level",
}


def _family(quantity: str) -> str:
    return max((p for p in FAMILIES if quantity.startswith(p)), key=len)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def quantities() -> str:
    """Every quantity of varprobe.vocabulary.QUANTITIES by family: its label, definition and presets."""
    from varprobe import vocabulary as v
    presets = {q: [name for name, qs in v.PRESETS.items() if q in qs] for q in v.QUANTITIES}
    by_family: dict[str, list[str]] = {p: [] for p in FAMILIES}
    for q in v.QUANTITIES:
        by_family[_family(q)].append(q)
    parts = [f"{len(v.QUANTITIES)} quantities; presets (`Probe(quantities=...)`): "
             + ", ".join(f"`{name}` ({len(qs)})" for name, qs in v.PRESETS.items()) + ".\n"]
    for prefix, heading in FAMILIES.items():
        rows = [f"| `{q}` | {_cell(v.SHORT.get(q, ''))} | {_cell(v.QUANTITIES[q])} | "
                f"{', '.join(presets[q])} |" for q in by_family[prefix]]
        parts.append(f"## {heading}\n\n| quantity | label | definition | presets |\n|---|---|---|---|\n"
                     + "\n".join(rows) + "\n")
    parts.append("## Conventions\n\n" + _conventions(v.__doc__ or ""))
    return "\n".join(parts)


def _conventions(doc: str) -> str:
    """The conventions list of the vocabulary's module docstring, its ``code`` marks in markdown."""
    text = doc.split("Conventions for every quantity of :data:`QUANTITIES`:", 1)[-1]
    return re.sub(r"``([^`]+)``", r"`\1`", text.strip()) + "\n"


def cli() -> str:
    """``varprobe --help`` and the help of each subcommand, as argparse prints them."""
    from varprobe.cli.main import build_parser
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        parser = build_parser()
        sub = next(a for a in parser._actions if a.dest == "command")  # the subparsers action
        parts = [f"## varprobe\n\n```text\n{_help(parser)}```\n"]
        for name, p in sub.choices.items():
            parts.append(f"## varprobe {name}\n\n```text\n{_help(p)}```\n")
    finally:
        if old is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(parts)


def _help(parser) -> str:
    buf = io.StringIO()
    with redirect_stdout(buf):
        parser.print_help()
    return buf.getvalue()


#: The packages with an API page (docs/api/NAME.md), whose names are documented there.
API_PAGES = ("probe", "record", "layers", "models", "data", "experiment", "claims", "analysis", "theory", "stats",
             "plot", "sinks", "integrations", "vocabulary", "cli")


def _home(module: str) -> str | None:
    """The API page (a package name of :data:`API_PAGES`) that documents what ``module`` defines."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "varprobe" and parts[1] in API_PAGES else None


def _defined_in(name: str, obj: object) -> str:
    """The module whose source assigns ``name`` at top level and holds ``obj`` under it."""
    assign = re.compile(rf"^{re.escape(name)}\s*(:[^=\n]*)?=", re.MULTILINE)
    for mod_name, mod in sorted(sys.modules.items()):
        if mod_name.startswith("varprobe.") and getattr(mod, name, None) is obj and getattr(mod, "__file__", None):
            if assign.search(Path(mod.__file__).read_text()):
                return mod_name
    raise ValueError(f"cannot tell where {name} is defined")


def _comment(module: str, name: str) -> str:
    """The ``#:`` comment lines right above ``name``'s assignment in ``module``, joined."""
    lines = Path(sys.modules[module].__file__).read_text().splitlines()
    at = next(i for i, ln in enumerate(lines) if re.match(rf"{re.escape(name)}\s*(:[^=]*)?=", ln))
    comment = []
    while at > 0 and lines[at - 1].startswith("#:"):
        at -= 1
        comment.insert(0, lines[at][2:].strip())
    return re.sub(r"``([^`]+)``", r"`\1`", " ".join(comment))


def api(package: str) -> str:
    """The API reference of ``package``: its docstring, then each name of its ``__all__`` once:
    functions and classes rendered by mkdocstrings from where they are defined, headed by the name
    they are imported by; constants as a table with their ``#:`` comments; names defined in another
    documented package as links to its page."""
    mod = import_module(package)
    page = _home(package)
    parts = [f"::: {package}\n    options:\n      members: false\n      show_root_heading: false\n"]
    constants, elsewhere = [], []
    for name in mod.__all__:
        obj = getattr(mod, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            where = obj.__module__
        else:
            where = _defined_in(name, obj)
        home = _home(where)
        if home != page:
            full = f"{where}.{name}" if home is None else f"varprobe.{home}.{name}"
            link = f"[`{full}`]({home}.md)" if home else f"`{full}`"
            elsewhere.append(f"`{name}` ({link})")
        elif inspect.isclass(obj) or inspect.isfunction(obj):
            parts.append(f"::: {where}.{obj.__qualname__}\n    options:\n      heading: {package}.{name}\n"
                         f"      toc_label: {name}\n")
        else:
            constants.append(f"| `{name}` | `{type(obj).__name__}` | {_cell(_comment(where, name))} |")
    if constants:
        parts.append("## Constants\n\n| name | type | what it holds |\n|---|---|---|\n" + "\n".join(constants) + "\n")
    if elsewhere:
        parts.append(f"Also exported by `{package}`, documented where they are defined: {', '.join(elsewhere)}.\n")
    return "\n".join(parts)


GENERATORS = {"quantities": quantities, "cli": cli}
