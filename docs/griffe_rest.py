"""A griffe extension for the API reference: varprobe's docstrings mark code the reST way, this
turns them into Markdown when mkdocstrings loads them.

- ````code```` becomes ```code```, and a paragraph ending in ``::`` with an indented block after it
  a fenced code block;
- a role (``:func:`x```, ``:class:``, ``:meth:``, ``:data:``, ``:mod:``, ``:attr:``, ``:exc:``) becomes
  a cross-reference when its target is documented in the API reference (a public name of an API
  package, a documented member of one, or an API package's page), and code when the target exists
  but is not documented there (a module's internals); a target that does not exist at all is a
  broken reference: a warning, which fails ``mkdocs build --strict``.
"""
from __future__ import annotations

import inspect
import logging
import re
import sys
from importlib import import_module
from importlib.util import find_spec
from pathlib import Path

import griffe

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

log = logging.getLogger("mkdocs.plugins.varprobe.docstrings")
API_PAGES = ("probe", "record", "layers", "models", "data", "experiment", "claims", "analysis", "theory", "stats",
             "plot", "sinks", "integrations", "vocabulary", "cli")
_ROLE = re.compile(r":(func|class|meth|data|mod|attr|exc|obj):`(~?)([\w.]+?)(\(\))?`")
_LITERAL = re.compile(r"(^[^\n]*?)::\n\n((?:(?:[ \t]+[^\n]*)?\n)+)", re.MULTILINE)


def _documented() -> set[str]:
    """Canonical paths of what the API pages render: the classes and functions of every API
    package's ``__all__`` and the public members with docstrings their classes define."""
    out = set()
    for page in API_PAGES:
        package = import_module(f"varprobe.{page}")
        for name in getattr(package, "__all__", []):
            obj = getattr(package, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            path = f"{obj.__module__}.{obj.__qualname__}"
            out.add(path)
            if inspect.isclass(obj):
                out.update(f"{path}.{m}" for m, v in vars(obj).items()
                           if not m.startswith("_") and getattr(v, "__doc__", None)
                           and (inspect.isfunction(v) or isinstance(v, (property, classmethod, staticmethod))))
    for cls in ("varprobe.integrations.lightning.ProbeCallback", "varprobe.integrations.huggingface.ProbeCallback"):
        out.add(cls)
    return out


class RestToMarkdown(griffe.Extension):
    """Rewrites every docstring of the loaded package once it is loaded (see the module docstring)."""

    def __init__(self) -> None:
        self.documented = _documented()

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        self.loader = loader
        self._walk(pkg)

    def _walk(self, obj: griffe.Object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = self._convert(obj, obj.docstring.value)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member)

    def _convert(self, obj: griffe.Object, text: str) -> str:
        text = re.sub(r"(?<!`)``([^`]+?)``(?!`)", r"`\1`", text)
        text = _LITERAL.sub(lambda m: f"{m.group(1)}:\n\n```\n{_dedent(m.group(2))}```\n\n", text)
        return _ROLE.sub(lambda m: self._role(obj, m.group(1), m.group(2) == "~", m.group(3)), text)

    def _role(self, obj: griffe.Object, role: str, short: bool, target: str) -> str:
        shown = f"`{target.rsplit('.', 1)[-1] if short else target}`"
        path = self._canonical(obj, target)
        if path is None:
            if not target.startswith(("varprobe", ".")) and _importable(target.split(".")[0]):
                return shown  # another library's name (glob.escape): shown, not linked
            log.warning(f"{obj.path}: the docstring refers to :{role}:`{target}`, which does not exist")
            return shown
        if path in self.documented:
            return f"[{shown}][{path}]"
        page = path.split(".")[1] if path.count(".") == 1 and path.startswith("varprobe.") else None
        if role == "mod" and page in API_PAGES:
            return f"[{shown}]({page}.md)"
        return shown

    def _canonical(self, obj: griffe.Object, target: str) -> str | None:
        """The canonical path of ``target`` as seen from ``obj``'s scope, or None if none exists."""
        if target.startswith("."):
            module = obj.module
            target = f"{module.path if module.is_init_module else module.parent.path}{target}"
        scopes = [s for s in (obj, obj.parent, getattr(obj.parent, "parent", None)) if s is not None]
        candidates = [target] if target.startswith("varprobe") else []
        for scope in scopes:
            try:
                candidates.append(scope.resolve(target.split(".")[0]) + target[len(target.split(".")[0]):])
            except (griffe.NameResolutionError, AttributeError):
                pass
            candidates.append(f"{scope.path}.{target}")
        for path in candidates:
            try:
                found = self.loader.modules_collection[path]
            except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
                continue
            try:
                return found.final_target.path if found.is_alias else found.path
            except griffe.AliasResolutionError:
                return found.target_path
        return _runtime(target) if target.startswith("varprobe.") else None


def _importable(name: str) -> bool:
    try:
        return find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _runtime(target: str) -> str | None:
    """The canonical path of a class or function ``target`` reached by importing it (the lazy
    names of ``varprobe`` and ``varprobe.analysis``), or None."""
    module, _, name = target.rpartition(".")
    try:
        obj = getattr(import_module(module), name)
    except (ImportError, AttributeError):
        return None
    return f"{obj.__module__}.{obj.__qualname__}" if inspect.isclass(obj) or inspect.isfunction(obj) else None


def _dedent(block: str) -> str:
    lines = block.rstrip("\n").split("\n")
    indent = min(len(ln) - len(ln.lstrip()) for ln in lines if ln.strip())
    return "\n".join(ln[indent:] for ln in lines) + "\n"
