"""Host manifests: ``fleet/<host>.yaml``, read and validated.

Every finding names the file, the line and the field, and all findings of a
manifest are reported together, so one run shows everything to fix.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from ka.errors import ManifestError, Problem, UnknownHost
from ka.repo import DIR, FILE, PathEscapes, RepoView, clean_relpath

SCOPES = ("arch", "soc", "subsystem", "driver", "module", "board")
FLEET = "fleet"
#: Files in fleet/ that are not hosts.
RESERVED = frozenset({"infra"})
HOST_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
B2SUM_RE = re.compile(r"^[0-9a-f]{128}$")

#: Keys each mapping may hold.  ``package``, ``build`` and ``install`` belong
#: to later verbs, which check them when they run.
TOP_KEYS = ("description", "baseline", "apply_order", "includes", "parity",
            "package", "build", "install")
REQUIRED = ("baseline", "apply_order", "includes")
BASELINE_KEYS = ("ref",)
PARITY_KEYS = ("b2sum", "canonical")


@dataclass(frozen=True)
class Include:
    """One ``includes`` entry: ``<scope>/<name>``."""

    text: str
    scope: str
    name: str
    line: int


@dataclass(frozen=True)
class Parity:
    """The parity reference of a host; either part may be absent."""

    b2sum: str | None = None
    canonical: str | None = None
    canonical_line: int | None = None

    @property
    def is_set(self) -> bool:
        return bool(self.b2sum or self.canonical)


@dataclass(frozen=True)
class Manifest:
    """A validated host manifest."""

    host: str
    path: str
    description: str
    baseline_ref: str
    apply_order: tuple[str, ...]
    includes: tuple[Include, ...]
    parity: Parity
    data: dict[str, Any] = field(repr=False, default_factory=dict)


def host_path(host: str) -> str:
    """The manifest path of ``host``, relative to the repository."""
    return f"{FLEET}/{host}.yaml"


def list_hosts(view: RepoView) -> list[str]:
    """Every host with a manifest in ``fleet/``, sorted."""
    if view.kind(FLEET) != DIR:
        return []
    names = [n[:-5] for n in view.listdir(FLEET) if n.endswith(".yaml")]
    return sorted(n for n in names if n not in RESERVED and _kind(view, n) in (FILE, "escapes"))


def _kind(view: RepoView, host: str) -> str | None:
    try:
        return view.kind(host_path(host))
    except PathEscapes:
        return "escapes"  # listed, so that loading it reports the symlink instead of hiding the host


def check_host_name(view: RepoView, host: str) -> None:
    """Raise :class:`UnknownHost` unless ``host`` names a manifest."""
    if not HOST_RE.match(host) or host in RESERVED:
        raise UnknownHost(host, list_hosts(view))
    kind = _kind(view, host)
    if kind == "escapes":
        raise ManifestError([Problem(view.display(host_path(host)), None, "",
                                     "is a symlink that leaves fleet/")])
    if kind != FILE:
        raise UnknownHost(host, list_hosts(view))


class _Doc:
    """A parsed YAML document with the line of every node, for messages."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.problems: list[Problem] = []
        loader = yaml.SafeLoader(text)
        try:
            self.node: Any = loader.get_single_node()
            self.data: Any = loader.construct_document(self.node) if self.node else None
        finally:
            loader.dispose()

    def add(self, node: yaml.Node | None, fld: str, message: str) -> None:
        line = None if node is None else node.start_mark.line + 1
        self.problems.append(Problem(self.path, line, fld, message))

    def pairs(self, node: yaml.Node) -> list[tuple[yaml.Node, yaml.Node]]:
        return list(node.value) if isinstance(node, yaml.MappingNode) else []


def _pair(node: yaml.Node | None, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if k.value == key:
            return k, v
    return None


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    pair = _pair(node, key)
    return pair[1] if pair else None


def _key(node: yaml.Node | None, key: str) -> yaml.Node | None:
    pair = _pair(node, key)
    return pair[0] if pair else None


def _check_keys(doc: _Doc, node: yaml.Node, allowed: tuple[str, ...], prefix: str) -> None:
    seen: set[str] = set()
    for key_node, _ in doc.pairs(node):
        key = str(key_node.value)
        name = f"{prefix}{key}"
        if key in seen:
            doc.add(key_node, name, "duplicate key")
        seen.add(key)
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(allowed)}"
            doc.add(key_node, name, f"unknown key{hint}")


def parse_manifest(host: str, path: str, text: str) -> Manifest:
    """Validate the text of a manifest; raise :class:`ManifestError` with every finding."""
    try:
        doc = _Doc(path, text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ManifestError([Problem(path, line, "", f"not valid YAML: {exc}")]) from None
    if not isinstance(doc.data, dict):
        raise ManifestError([Problem(path, 1, "", "must be a mapping of keys "
                                     "(description, baseline, apply_order, includes, parity)")])
    _check_keys(doc, doc.node, TOP_KEYS, "")
    for key in REQUIRED:
        if key not in doc.data:
            doc.add(doc.node, key, "missing (required)")
    manifest = Manifest(
        host=host, path=path,
        description=_description(doc),
        baseline_ref=_baseline(doc),
        apply_order=_apply_order(doc),
        includes=(),
        parity=_parity(doc),
        data=doc.data,
    )
    includes = _includes(doc, manifest.apply_order)
    if doc.problems:
        raise ManifestError(doc.problems)
    return Manifest(**{**manifest.__dict__, "includes": includes})


def _description(doc: _Doc) -> str:
    value = doc.data.get("description", "")
    if value is None:
        return ""
    if not isinstance(value, str):
        doc.add(_child(doc.node, "description"), "description", "must be text")
        return ""
    return value


def _baseline(doc: _Doc) -> str:
    node = _child(doc.node, "baseline")
    value = doc.data.get("baseline")
    if node is None:
        return ""
    if not isinstance(value, dict):
        doc.add(node, "baseline", "must be a mapping with 'ref' (a tag or commit in the kernel tree)")
        return ""
    _check_keys(doc, node, BASELINE_KEYS, "baseline.")
    ref = value.get("ref")
    if ref is None or ref == "":
        doc.add(_key(doc.node, "baseline"), "baseline.ref", "missing (required): a tag or commit in the kernel tree")
        return ""
    if not isinstance(ref, str) or ref.startswith("-") or any(c.isspace() for c in ref):
        doc.add(_child(node, "ref"), "baseline.ref", f"{ref!r} is not a git tag or commit name")
        return ""
    return ref


def _apply_order(doc: _Doc) -> tuple[str, ...]:
    node = _child(doc.node, "apply_order")
    value = doc.data.get("apply_order")
    if node is None:
        return ()
    if not isinstance(value, list) or not value:
        doc.add(node, "apply_order", f"must be a non-empty list of scopes ({', '.join(SCOPES)})")
        return ()
    order: list[str] = []
    for i, (item, item_node) in enumerate(zip(value, node.value, strict=False)):
        fld = f"apply_order[{i}]"
        if item not in SCOPES:
            close = difflib.get_close_matches(str(item), SCOPES, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            doc.add(item_node, fld, f"'{item}' is not a scope (one of {', '.join(SCOPES)}){hint}")
        elif item in order:
            doc.add(item_node, fld, f"scope '{item}' listed twice")
        else:
            order.append(item)
    return tuple(order)


def _includes(doc: _Doc, order: tuple[str, ...]) -> tuple[Include, ...]:
    node = _child(doc.node, "includes")
    value = doc.data.get("includes")
    if node is None:
        return ()
    if not isinstance(value, list) or not value:
        doc.add(node, "includes", "must be a non-empty list of <scope>/<name> series")
        return ()
    found: list[Include] = []
    seen: dict[str, int] = {}
    for i, (item, item_node) in enumerate(zip(value, node.value, strict=False)):
        inc = _include(doc, item, item_node, f"includes[{i}]", order)
        if inc is None:
            continue
        key = inc.text.removesuffix(".patch")
        if key in seen:
            doc.add(item_node, f"includes[{i}]", f"'{inc.text}' is already included at line {seen[key]}")
            continue
        seen[key] = inc.line
        found.append(inc)
    return tuple(found)


def _include(doc: _Doc, item: object, node: yaml.Node, fld: str,
             order: tuple[str, ...]) -> Include | None:
    line = node.start_mark.line + 1
    if not isinstance(item, str) or "/" not in item:
        doc.add(node, fld, f"{item!r} must be '<scope>/<name>' (e.g. driver/bes2600)")
        return None
    scope, _, name = item.partition("/")
    clean = clean_relpath(item)
    if clean is None or clean != item or not name or name.startswith(".") or "\\" in name:
        doc.add(node, fld, f"'{item}' must be a plain path inside patches/<scope>/ (no '..', no absolute path)")
        return None
    if scope not in SCOPES:
        close = difflib.get_close_matches(scope, SCOPES, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        doc.add(node, fld, f"'{scope}' is not a scope (one of {', '.join(SCOPES)}){hint}")
        return None
    if order and scope not in order:
        doc.add(node, fld, f"scope '{scope}' of '{item}' is not in apply_order ({', '.join(order)})")
        return None
    return Include(text=item, scope=scope, name=name, line=line)


def _parity(doc: _Doc) -> Parity:
    node = _child(doc.node, "parity")
    value = doc.data.get("parity")
    if node is None or value is None:
        return Parity()
    if not isinstance(value, dict):
        doc.add(node, "parity", "must be a mapping with 'b2sum' and/or 'canonical'")
        return Parity()
    _check_keys(doc, node, PARITY_KEYS, "parity.")
    b2 = value.get("b2sum")
    if b2 is not None and not (isinstance(b2, str) and B2SUM_RE.match(b2)):
        doc.add(_child(node, "b2sum"), "parity.b2sum",
                "must be 128 lowercase hex digits, as b2sum prints it")
        b2 = None
    canon = value.get("canonical")
    canon_node = _child(node, "canonical")
    if canon is not None and (not isinstance(canon, str) or clean_relpath(canon) is None):
        doc.add(canon_node, "parity.canonical",
                f"{canon!r} must be a path inside the repository (no '..', no absolute path)")
        canon = None
    line = canon_node.start_mark.line + 1 if canon_node is not None else None
    return Parity(b2sum=b2, canonical=canon, canonical_line=line)


def load_manifest(view: RepoView, host: str) -> Manifest:
    """Read and validate the manifest of ``host`` from ``view``."""
    check_host_name(view, host)
    path = host_path(host)
    raw = view.read(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError([Problem(view.display(path), None, "", f"not UTF-8 text: {exc}")]) from None
    return parse_manifest(host, view.display(path), text)
