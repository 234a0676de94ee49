"""YAML documents read for validation: every node keeps its line, and nothing in the file can
make reading it expensive.

Manifests and ``infra.yaml`` come from pull requests too, so the loader refuses what has no use
in them and can be abused: anchors and aliases (a few hundred bytes of nested aliases expand to
gigabytes: "billion laughs"), merge keys, explicit tags, and nesting deeper than :data:`MAX_DEPTH`
(PyYAML composes recursively).  The checks run while composing, before any value is built.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent

from ka.errors import ManifestError, Problem
from ka.text import cap, did_you_mean, printable, shown

MAX_DEPTH = 32
MAX_FINDINGS = 10
_MERGE = "tag:yaml.org,2002:merge"
_NULL = "tag:yaml.org,2002:null"


def _tag_name(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") else tag


class _ScreeningLoader(yaml.SafeLoader):
    """SafeLoader whose composer records (instead of honouring) the features above.

    Dates stay text (a manifest has none, and ``2001-02-30`` made the constructor raise), and
    a value that cannot be built (an integer of 5,000 digits) is a located error.
    """

    yaml_implicit_resolvers = {  # noqa: RUF012 - PyYAML reads it from the class
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(None, None, f"cannot read this value: {cap(str(exc), 80)}",
                                                    node.start_mark) from None

    def __init__(self, text: str, what: str) -> None:
        super().__init__(text)
        self.what = what
        self.findings: list[tuple[int, str, str]] = []
        self.path: list[str] = []

    def _find(self, mark: Any, message: str) -> None:
        line = mark.line + 1
        if all(f[0] != line for f in self.findings):  # one finding per line is enough to act on
            field = ".".join(p for p in self.path if p).replace(".[", "[")
            self.findings.append((line, cap(field, 80), message))

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.path.append(_label(index))
        try:
            return self._screened(parent, index)
        finally:
            self.path.pop()

    def _screened(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        why = "they have no use there, and nested aliases expand without bound"
        if isinstance(event, AliasEvent):
            self.get_event()
            self._find(event.start_mark, f"aliases (*{printable(event.anchor or '', 40)}) and anchors are not allowed "
                                         f"in {self.what}: {why}")
            return _null(event)
        if event.anchor is not None:
            self._find(event.start_mark, f"anchors (&{printable(event.anchor, 40)}) and aliases are not allowed "
                                         f"in {self.what}: {why}")
            event.anchor = None
        tag = getattr(event, "tag", None)
        if tag not in (None, "!"):
            self._find(event.start_mark, f"tag {printable(_tag_name(tag), 60)} is not allowed in {self.what}: "
                                         "plain values only")
            event.tag = None
        if isinstance(event, CollectionStartEvent) and len(self.path) > MAX_DEPTH:
            self._find(event.start_mark, f"nested deeper than {MAX_DEPTH} levels")
            return self._skip(event)
        return super().compose_node(parent, index)

    def _skip(self, start: Any) -> Any:
        depth = 0
        while True:
            event = self.get_event()
            depth += isinstance(event, CollectionStartEvent) - isinstance(event, CollectionEndEvent)
            if depth == 0:
                return _null(start)

    def compose_mapping_node(self, anchor: Any) -> Any:
        node = super().compose_mapping_node(anchor)
        for key, _ in node.value:
            if key.tag == _MERGE:
                self._find(key.start_mark, f"merge keys (<<) are not allowed in {self.what}: write the keys out")
        return node


def _null(event: Any) -> yaml.ScalarNode:
    """A null node standing where a refused construct was."""
    return yaml.ScalarNode(_NULL, "", event.start_mark, event.end_mark)


def _label(index: Any) -> str:
    if isinstance(index, yaml.ScalarNode):
        return printable(str(index.value), 40)
    return f"[{index}]" if isinstance(index, int) else ""


class Doc:
    """A screened YAML document: its node tree (with lines), its data, and the problems found."""

    def __init__(self, path: str, text: str, what: str) -> None:
        self.path = path
        self.problems: list[Problem] = []
        try:
            loader = _ScreeningLoader(text, what)
        except yaml.YAMLError as exc:  # the reader refuses control characters at once
            at = getattr(exc, "position", None)
            raise ManifestError([Problem(path, text.count("\n", 0, at or 0) + 1, "",
                                         f"not valid YAML: {cap(str(exc), 300)}")]) from None
        try:
            self.node: Any = loader.get_single_node()
            if loader.findings:
                found = loader.findings[:MAX_FINDINGS]
                problems = [Problem(path, line, field, message) for line, field, message in found]
                if len(loader.findings) > MAX_FINDINGS:
                    problems.append(Problem(path, None, "", f"… and {len(loader.findings) - MAX_FINDINGS} more"))
                raise ManifestError(problems)
            self.data: Any = loader.construct_document(self.node) if self.node else None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            raise ManifestError([Problem(path, line, "", f"not valid YAML: {cap(str(exc), 300)}")]) from None
        finally:
            loader.dispose()

    def add(self, node: yaml.Node | None, fld: str, message: str) -> None:
        """Record a problem at ``node``'s line."""
        line = None if node is None else node.start_mark.line + 1
        self.problems.append(Problem(self.path, line, fld, message))

    def check_keys(self, node: yaml.Node, allowed: tuple[str, ...], prefix: str) -> None:
        """Unknown keys (with a "did you mean") and duplicate keys of a mapping node."""
        seen: set[str] = set()
        for key_node, _ in pairs(node):
            key = str(key_node.value)
            name = f"{prefix}{printable(key, 60)}"
            if key in seen:
                self.add(key_node, name, "duplicate key")
            seen.add(key)
            if key not in allowed:
                hint = did_you_mean(key, allowed) or f"; allowed: {', '.join(allowed)}"
                self.add(key_node, name, f"unknown key{hint}")


def pairs(node: yaml.Node | None) -> list[tuple[yaml.Node, yaml.Node]]:
    """The (key, value) node pairs of a mapping node; none for anything else."""
    return list(node.value) if isinstance(node, yaml.MappingNode) else []


def pair(node: yaml.Node | None, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    """The (key, value) nodes of ``key`` in a mapping node: the last one, as the data has it
    when a key is written twice (which is reported on its own)."""
    found = None
    for k, v in pairs(node):
        if k.value == key:
            found = k, v
    return found


def child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    """The value node of ``key``."""
    found = pair(node, key)
    return found[1] if found else None


def key_node(node: yaml.Node | None, key: str) -> yaml.Node | None:
    """The key node of ``key`` (for a line when the value is missing)."""
    found = pair(node, key)
    return found[0] if found else None


def whole_number(doc: Doc, node: yaml.Node | None, value: dict[str, Any], key: str, bounds: tuple[int, int],
                 default: int, fld: str, unit: str) -> int:
    """``value[key]``, a whole number within ``bounds`` (``default`` when absent); out of bounds or not a
    number, a problem on ``fld`` naming the ``unit`` and ``default``."""
    got = value.get(key)
    if got is None:
        return default
    low, high = bounds
    if not isinstance(got, int) or isinstance(got, bool) or not low <= got <= high:
        doc.add(child(node, key), fld, f"{shown(got)} is not a whole number of {unit} from {low} to {high}")
        return default
    return got
