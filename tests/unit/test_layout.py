"""The tree shows the design: imports go one way, and no module reaches around that with a late import.

Read from the source (ast), not by importing: every ``import`` and ``from … import`` of the
project's own modules, wherever it is written.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.support import PROJECT, docs

PACKAGES = ("ka", "bot", "handlers")
# ka's layers, lowest first: a module may import its own layer and those below it, never above
KA_LAYERS = ["ka.errors ka.limits ka.text", "ka.io", "ka.fleet", "ka.promote", "ka.packages", "ka.build",
             "ka.install", "ka.status ka.host", "ka.cli"]
# bot: the pure event layer at the bottom, the web app and the command line at the top
BOT_LAYERS = ["bot.events bot.public",
              "bot.owner bot.config bot.mirror bot.local bot.forge.client bot.store bot.services", "bot.forge",
              "bot.jobs", "bot.web", "bot.cli bot.__main__"]
# late imports kept on purpose: the CLI loads ssh (paramiko) and the verbs only for the verb it runs
LATE_OK = {"ka.cli.main", "bot.config"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(PROJECT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported project module, imported inside a function) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    late = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
            for n in ast.walk(f) if isinstance(n, ast.Import | ast.ImportFrom)}
    typing_only = {id(n) for i in ast.walk(tree) if isinstance(i, ast.If) and "TYPE_CHECKING" in ast.unparse(i.test)
                   for n in ast.walk(i)}
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            found += [(_resolve(n) or node.module, id(node) in late) for n in names]
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) in late) for a in node.names]
    return [(m, is_late) for m, is_late in found if m.split(".")[0] in PACKAGES]


def _resolve(dotted: str) -> str | None:
    """``dotted`` if it names a module of the project (``from ka.io import runner``), else None."""
    base = PROJECT.joinpath(*dotted.split("."))
    return dotted if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file() else None


GRAPH = {_module(p): _imports(p) for pkg in PACKAGES for p in sorted((PROJECT / pkg).rglob("*.py"))}


def _layer(module: str, layers: list[str]) -> int | None:
    for i, names in enumerate(layers):
        if any(module == n or module.startswith(n + ".") for n in names.split()):
            return i
    return None


def test_the_graph_was_read() -> None:
    assert len(GRAPH) > 90 and ("ka.io.runner", False) in GRAPH["ka.promote.flow"] + GRAPH["ka.fleet.repo"]


def test_no_import_circle() -> None:
    edges = {m: {i for i, _ in deps if i in GRAPH and i != m} for m, deps in GRAPH.items()}
    state: dict[str, str] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for n in sorted(edges[m]):
            if state.get(n) == "open":
                pytest.fail("import circle: " + " -> ".join([*path[path.index(n):], n]))
            if n not in state:
                visit(n, [*path, n])
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])


def test_no_late_import_of_the_project_outside_the_entry_points() -> None:
    late = [f"{m} imports {i} inside a function" for m, deps in GRAPH.items() for i, is_late in deps
            if is_late and m not in LATE_OK]
    assert late == []


@pytest.mark.parametrize(("top", "layers"), [("ka", KA_LAYERS), ("bot", BOT_LAYERS)])
def test_imports_go_down_the_layers(top: str, layers: list[str]) -> None:
    upward = []
    for m, deps in GRAPH.items():
        if not m.startswith(top + ".") or (m.endswith("__main__") and top == "ka"):
            continue
        mine = _layer(m, layers)
        assert mine is not None, f"{m} is in no layer of {top}"
        upward += [f"{m} (layer {mine}) imports {i} (layer {_layer(i, layers)})" for i, _ in deps
                   if i.startswith(top + ".") and (_layer(i, layers) or 0) > mine]
    assert upward == []


def test_the_tool_knows_nothing_of_the_bot_and_handlers_only_the_event_api() -> None:
    assert [(m, i) for m, deps in GRAPH.items() if m.startswith("ka") for i, _ in deps if not i.startswith("ka")] == []
    assert [(m, i) for m, deps in GRAPH.items() if m.startswith("handlers") for i, _ in deps
            if not i.startswith(("bot.events", "handlers"))] == []


def _strings(path: Path) -> list[str]:
    return [n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)]


SQL = re.compile(r"\bSELECT\b.*\bFROM\b|\bINSERT (OR \w+ )?INTO\b|\bUPDATE \w+ SET\b|\bDELETE FROM\b|\bCREATE TABLE\b")


def test_sql_only_in_the_store() -> None:
    """The store's tables are reached through bot/store.py's named statements (the queue database huey keeps,
    in bot/services.py, is huey's own: only PRAGMAs there)."""
    outside = [f"{_module(p)}: {s[:60]!r}" for pkg in PACKAGES for p in sorted((PROJECT / pkg).rglob("*.py"))
               if p != PROJECT / "bot" / "store.py" for s in _strings(p) if SQL.search(s)]
    assert outside == []
    assert "def query(" not in (PROJECT / "bot" / "store.py").read_text()


FORMAT_TEST = re.compile(r"""[=!]=\s*["'](pacman|deb|apt|dpkg)["']|["'](pacman|deb|apt|dpkg)["']\s*[=!]="""
                         r"""|["']\.(deb|pkg\.tar\.zst)["']|\.beside\b|\.installer\s*[=!]=""")


def test_no_package_format_compared_outside_the_format_objects() -> None:
    """What differs between pacman and deb is asked of ka/fleet/formats.py's objects, or of a verb's table keyed
    by the format's name; nothing else tests which format it has, its capabilities, or a file's ending."""
    found = [f"{_module(p)}:{n}: {line.strip()}" for pkg in PACKAGES for p in sorted((PROJECT / pkg).rglob("*.py"))
             if p != PROJECT / "ka" / "fleet" / "formats.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if FORMAT_TEST.search(line)]
    assert found == []


def test_no_optional_device_in_the_install_steps() -> None:
    """Install steps run after the host was connected: the device is there, never asserted."""
    text = "\n".join(p.read_text() for p in sorted((PROJECT / "ka" / "install").glob("*.py")))
    assert "assert device is not None" not in text and "assert self.device" not in text
    assert "type: ignore[union-attr]" not in text


def _main_guards(body: list[ast.stmt]) -> list[int]:
    return [i for i, node in enumerate(body) if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]


def _documented_scripts() -> list[Path]:
    """The scripts of tests/ the README tells a user to run (the ones with a ``__main__`` guard)."""
    text = docs.text()
    named = {PROJECT / m for m in re.findall(r"\b(tests/[\w/]+\.py)\b", text)}
    return sorted(p for p in named if p.is_file() and _main_guards(ast.parse(p.read_text()).body))


def test_every_documented_script_runs_its_main_after_the_whole_module() -> None:
    """A script whose ``if __name__ == "__main__"`` is not its last statement runs main() before the rest
    of the module is defined (qemuhost.py's build crashed on a NameError that way)."""
    scripts = _documented_scripts()
    assert len(scripts) >= 5, scripts  # qemuhost.py, fullloop.py and the benchmarks
    for path in scripts:
        body = ast.parse(path.read_text()).body
        where = path.relative_to(PROJECT)
        assert _main_guards(body) == [len(body) - 1], f"{where}: the __main__ guard is not the last statement"
