"""Host manifests: ``fleet/<host>.yaml``, read and validated.

Every finding names the file, the line and the field, and all findings of a
manifest are reported together, so one run shows everything to fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from ka.errors import ManifestError, Problem, UnknownHost
from ka.fleet.installspec import InstallSpec, parse_install
from ka.fleet.packagespec import PackageSpec, parse_package
from ka.fleet.repo import DIR, FILE, PathEscapes, RepoView, clean_relpath
from ka.fleet.yamldoc import Doc, child, key_node
from ka.limits import MANIFEST_MAX, human
from ka.text import did_you_mean, printable, shown

SCOPES = ("arch", "soc", "subsystem", "driver", "module", "board")
FLEET = "fleet"
#: Files in fleet/ that are not hosts.
RESERVED = frozenset({"infra"})
HOST_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")  # always fullmatch: "$" would let "name\n" through
HOST_RULE = "lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, at most 63"
B2SUM_RE = re.compile(r"[0-9a-f]{128}")
#: parity.canonical on a host (as the hand-built package's patch lies on the build host): ssh name, path
REMOTE_RE = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]{0,62}):([A-Za-z0-9._/~+-][A-Za-z0-9._/~+ -]{0,400})")
#: a tag, a branch or a commit id: git's revision syntax (":/regex" walks all history, "@{…}", "^", "~")
#: has no place in a manifest, and a pull request must not make the bot search the kernel's history
REF_RE = re.compile(r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._/+-]{0,199}(?<![./])")

#: Keys each mapping may hold.  ``build`` belongs to a later verb, which checks it when it
#: runs; ``package`` is ka-build's (ka/fleet/packagespec.py), ``install`` ka-install's (ka/fleet/installspec.py).
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
    remote: tuple[str, str] | None = None  # canonical as HOST:PATH: the patch as it lies on that host

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
    package: PackageSpec | None = None
    install: InstallSpec | None = None


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


def valid_host_name(name: str) -> bool:
    """True for a name a host may have (it becomes a file name, a status context, an ssh name)."""
    return HOST_RE.fullmatch(name) is not None and name not in RESERVED


def check_host_name(view: RepoView, host: str) -> None:
    """Raise :class:`UnknownHost` unless ``host`` names a manifest.

    A manifest whose file name is not a valid host name is reported as a problem of that file.
    """
    if not valid_host_name(host):
        known = list_hosts(view)
        if host in known:
            raise ManifestError([Problem(view.display(printable(host_path(host))), None, "file name",
                                         f"'{printable(host)}' is not a host name ({HOST_RULE}); rename the file")])
        raise UnknownHost(printable(host), [printable(k) for k in known])
    kind = _kind(view, host)
    if kind == "escapes":
        raise ManifestError([Problem(view.display(host_path(host)), None, "",
                                     "is a symlink that leaves fleet/")])
    if kind != FILE:
        raise UnknownHost(host, list_hosts(view))


def parse_manifest(host: str, path: str, text: str) -> Manifest:
    """Validate the text of a manifest; raise :class:`ManifestError` with every finding."""
    doc = Doc(path, text, "a manifest")
    if not isinstance(doc.data, dict):
        raise ManifestError([Problem(path, 1, "", "must be a mapping of keys "
                                     "(description, baseline, apply_order, includes, parity)")])
    doc.check_keys(doc.node, TOP_KEYS, "")
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
        package=parse_package(doc, host),
    )
    manifest = Manifest(**{**manifest.__dict__, "install": parse_install(doc, host, manifest.package)})
    includes = _includes(doc, manifest.apply_order)
    if doc.problems:
        raise ManifestError(doc.problems)
    return Manifest(**{**manifest.__dict__, "includes": includes})


def _description(doc: Doc) -> str:
    value = doc.data.get("description", "")
    if value is None:
        return ""
    if not isinstance(value, str):
        doc.add(child(doc.node, "description"), "description", "must be text")
        return ""
    return value


def _baseline(doc: Doc) -> str:
    node = child(doc.node, "baseline")
    value = doc.data.get("baseline")
    if node is None:
        return ""
    if not isinstance(value, dict):
        doc.add(node, "baseline", "must be a mapping with 'ref' (a tag or commit in the kernel tree)")
        return ""
    doc.check_keys(node, BASELINE_KEYS, "baseline.")
    ref = value.get("ref")
    if ref is None or ref == "":
        doc.add(key_node(doc.node, "baseline"), "baseline.ref",
                "missing (required): a tag or commit in the kernel tree")
        return ""
    if not isinstance(ref, str) or not REF_RE.fullmatch(ref) or ref.endswith(".lock"):
        doc.add(child(node, "ref"), "baseline.ref", f"{shown(ref)} is not a git tag or commit name "
                "(letters, digits, '.', '_', '/', '+', '-')")
        return ""
    return ref


def _apply_order(doc: Doc) -> tuple[str, ...]:
    node = child(doc.node, "apply_order")
    value = doc.data.get("apply_order")
    if node is None:
        return ()
    if not isinstance(value, list) or not value or not isinstance(node, yaml.SequenceNode):
        doc.add(node, "apply_order", f"must be a non-empty list of scopes ({', '.join(SCOPES)})")
        return ()
    order: list[str] = []
    for i, (item, item_node) in enumerate(zip(value, node.value, strict=False)):
        fld = f"apply_order[{i}]"
        if item not in SCOPES:
            hint = did_you_mean(str(item), SCOPES)
            doc.add(item_node, fld, f"{shown(item)} is not a scope (one of {', '.join(SCOPES)}){hint}")
        elif item in order:
            doc.add(item_node, fld, f"scope '{item}' listed twice")
        else:
            order.append(item)
    return tuple(order)


def _includes(doc: Doc, order: tuple[str, ...]) -> tuple[Include, ...]:
    node = child(doc.node, "includes")
    value = doc.data.get("includes")
    if node is None:
        return ()
    if not isinstance(value, list) or not value or not isinstance(node, yaml.SequenceNode):
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
            doc.add(item_node, f"includes[{i}]", f"{shown(inc.text)} is already included at line {seen[key]}")
            continue
        seen[key] = inc.line
        found.append(inc)
    return tuple(found)


def _include(doc: Doc, item: object, node: yaml.Node, fld: str,
             order: tuple[str, ...]) -> Include | None:
    line = node.start_mark.line + 1
    if not isinstance(item, str) or "/" not in item:
        doc.add(node, fld, f"{shown(item)} must be '<scope>/<name>' (e.g. driver/bes2600)")
        return None
    scope, _, name = item.partition("/")
    clean = clean_relpath(item)
    if clean is None or clean != item or not name or name.startswith(".") or "\\" in name:
        doc.add(node, fld, f"{shown(item)} must be a plain path inside patches/<scope>/ (no '..', no absolute path)")
        return None
    if scope not in SCOPES:
        doc.add(node, fld, f"{shown(scope)} is not a scope (one of {', '.join(SCOPES)}){did_you_mean(scope, SCOPES)}")
        return None
    if order and scope not in order:
        doc.add(node, fld, f"scope '{scope}' of {shown(item)} is not in apply_order ({', '.join(order)})")
        return None
    return Include(text=item, scope=scope, name=name, line=line)


def _parity(doc: Doc) -> Parity:
    node = child(doc.node, "parity")
    value = doc.data.get("parity")
    if node is None or value is None:
        return Parity()
    if not isinstance(value, dict):
        doc.add(node, "parity", "must be a mapping with 'b2sum' and/or 'canonical'")
        return Parity()
    doc.check_keys(node, PARITY_KEYS, "parity.")
    b2 = value.get("b2sum")
    if b2 is not None and not (isinstance(b2, str) and B2SUM_RE.fullmatch(b2)):
        doc.add(child(node, "b2sum"), "parity.b2sum",
                "must be 128 lowercase hex digits, as b2sum prints it")
        b2 = None
    canon = value.get("canonical")
    canon_node = child(node, "canonical")
    remote = REMOTE_RE.fullmatch(canon) if isinstance(canon, str) else None
    if remote is not None and ".." in remote.group(2).split("/"):
        doc.add(canon_node, "parity.canonical", f"{shown(canon)}: a remote path may not contain '..'")
        canon = None
    elif canon is not None and remote is None and (not isinstance(canon, str) or clean_relpath(canon) is None):
        doc.add(canon_node, "parity.canonical",
                f"{shown(canon)} must be a path inside the repository (no '..', no absolute path, nothing in .git), "
                "or HOST:PATH on a host of the ssh config")
        canon = None
    line = canon_node.start_mark.line + 1 if canon_node is not None else None
    return Parity(b2sum=b2, canonical=canon, canonical_line=line,
                  remote=(remote.group(1), remote.group(2)) if remote and canon else None)


def load_manifest(view: RepoView, host: str) -> Manifest:
    """Read and validate the manifest of ``host`` from ``view``."""
    check_host_name(view, host)
    path = host_path(host)
    size = view.size(path)
    if size > MANIFEST_MAX:
        raise ManifestError([Problem(view.display(path), None, "",
                                     f"is {human(size)}; a manifest may hold at most {human(MANIFEST_MAX)}")])
    raw = view.read(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError([Problem(view.display(path), None, "", f"not UTF-8 text: {exc}")]) from None
    return parse_manifest(host, view.display(path), text)
