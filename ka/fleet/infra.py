"""``fleet/infra.yaml``: the machines that serve the fleet, and who may operate each host.

Read with the same screened YAML loader as the manifests and validated the same way: every
problem at once, each with the file, the line and the field::

    build_hosts:                       # tried in this order; the next when one cannot be reached
      - ssh: boltzmann                 # a name of the ssh config (KA_SSH_CONFIG)
        workdir: ka-builds             # relative to the build user's home, or absolute
        cross_compile: aarch64-linux-gnu-   # optional: an x86_64 builder making arm64 kernels
        max_builds: 2                  # optional: builds at once there (default 1)
        ccache: 20G                    # optional: compiler cache per fleet host there (default 5G; off)
      - ssh: fermi
        workdir: /srv/ka-builds
    repository:
      ssh: hertz
      path: /srv/pacman/fleet/aarch64  # where the packages and the database live
      name: fleet                      # the database: fleet.db.tar.zst
      url: https://pkg.example.org/fleet/aarch64
      key: 0123456789ABCDEF0123456789ABCDEF01234567   # signing key (fingerprint)
      gnupghome: .gnupg-repo           # optional: the keyring repo-add -s signs with, on that host
    apt_repository:                    # for hosts with package.format deb: a reprepro repository
      ssh: hertz
      path: /srv/apt/fleet             # reprepro's base folder (conf/, dists/, pool/)
      name: fleet                      # the distribution (apt's suite), component main
      url: https://pkg.example.org/apt/fleet   # what the hosts' apt reads
      key: 0123456789ABCDEF0123456789ABCDEF01234567   # reprepro's SignWith, and what apt trusts
      gnupghome: .gnupg-repo
    backup:
      ssh: hertz
      path: /srv/kernel-agent-backups
    operators:                          # besides the repository's admins: who may install, roll back
      ampere: [alice]                  # (a login counts only while it has read access or more)
    parity_references:                 # the only folders parity.canonical: HOST:PATH may name; nothing
      - ssh: boltzmann                 # outside them is ever read (the bot takes this list from the
        path: canonical                # default branch, never from the commit it checks)
    pull_request_build_hosts:          # where /ka build runs a pull request's commit, whose code runs
      - ssh: boltzmann-pr              # there: another account (or machine) than build_hosts, so it
        workdir: ka-builds             # cannot change what they build; never signed nor published
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from ka.errors import ManifestError, Problem
from ka.fleet.formats import PackageFormat
from ka.fleet.manifest import FLEET
from ka.fleet.repo import FILE, PathEscapes, RepoView
from ka.fleet.yamldoc import Doc, child, whole_number
from ka.text import shown

INFRA = f"{FLEET}/infra.yaml"
TOP_KEYS = ("build_hosts", "repository", "apt_repository", "backup", "operators", "parity_references",
            "pull_request_build_hosts")
BUILD_KEYS = ("ssh", "workdir", "cross_compile", "max_builds", "ccache")
MAX_BUILDS = 64  # a build host's builds at once: each is a kernel build, -j its cores
REPO_KEYS = ("ssh", "path", "name", "url", "key", "gnupghome")
FOLDER_KEYS = ("ssh", "path")
SSH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
REMOTE_PATH = re.compile(r"[A-Za-z0-9._/+~-]{1,400}")
PREFIX = re.compile(r"[A-Za-z0-9._/+-]{1,100}")
FPR = re.compile(r"[0-9A-Fa-f]{16}|[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64}")
DB_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
SIZE = re.compile(r"[1-9][0-9]{0,5}[KMGT]")  # ccache's max_size (binary units)
CCACHE_SIZE = "5G"  # ccache's own default


class _Machine:
    """A machine of infra.yaml, named in messages with the line that names it."""

    ssh: str
    place: str

    @property
    def role(self) -> str:
        """The ssh name with where it comes from: ``boltzmann (build_hosts[0].ssh, fleet/infra.yaml:4)``."""
        return f"{self.ssh} ({self.place})" if self.place else self.ssh


@dataclass(frozen=True)
class BuildHost(_Machine):
    """A machine the builds run on (makepkg, dpkg-buildpackage)."""

    ssh: str
    workdir: str
    cross_compile: str | None = None
    place: str = field(default="", compare=False)  # "build_hosts[0].ssh, fleet/infra.yaml:4", for messages
    max_builds: int = 1  # builds at once there, each holding one of its slots (ka/build/slots.py)
    ccache: str | None = CCACHE_SIZE  # each fleet host's compiler cache there at most this big; None: none


@dataclass(frozen=True)
class Repository(_Machine):
    """The package repository: where packages are published, and with which key."""

    ssh: str
    path: str
    name: str
    url: str
    key: str
    gnupghome: str | None = None
    place: str = field(default="", compare=False)  # "build_hosts[0].ssh, fleet/infra.yaml:4", for messages


@dataclass(frozen=True)
class Folder(_Machine):
    """A folder on a host: where ka-install keeps the replaced kernels, where parity references may be read."""

    ssh: str
    path: str
    place: str = field(default="", compare=False)  # "build_hosts[0].ssh, fleet/infra.yaml:4", for messages


@dataclass(frozen=True)
class Infra:
    """The validated ``infra.yaml`` (every part optional until a verb needs it)."""

    build_hosts: tuple[BuildHost, ...] = ()
    repository: Repository | None = None
    backup: Folder | None = None
    operators: dict[str, list[str]] = field(default_factory=dict)
    path: str = INFRA
    apt_repository: Repository | None = None  # for package.format deb: name is the distribution
    parity_references: tuple[Folder, ...] = ()
    pull_request_build_hosts: tuple[BuildHost, ...] = ()

    def repository_for(self, fmt: PackageFormat) -> Repository | None:
        """Where packages of ``fmt`` are published: the section ``fmt.repository_key`` names
        (``repository`` for pacman, ``apt_repository`` for deb)."""
        repo: Repository | None = getattr(self, fmt.repository_key)
        return repo


def load_infra(view: RepoView) -> Infra:
    """Read and validate ``fleet/infra.yaml`` (an empty :class:`Infra` when there is none)."""
    try:
        if view.kind(INFRA) != FILE:
            return Infra(path=view.display(INFRA))
    except PathEscapes:
        raise ManifestError([Problem(view.display(INFRA), None, "", "is a symlink that leaves fleet/")]) from None
    return parse_infra(view.display(INFRA), view.read(INFRA).decode("utf-8", "replace"))


def parse_infra(path: str, text: str) -> Infra:
    """Validate the text of an infra.yaml (``path`` names it in messages); :class:`ManifestError` with every
    finding."""
    doc = Doc(path, text, "infra.yaml")
    if doc.data is None:
        return Infra(path=doc.path)
    if not isinstance(doc.data, dict):
        raise ManifestError([Problem(doc.path, 1, "", "must be a mapping of keys (" + ", ".join(TOP_KEYS) + ")")])
    doc.check_keys(doc.node, TOP_KEYS, "")
    infra = Infra(build_hosts=_build_hosts(doc), repository=_repository(doc), backup=_backup(doc),
                  operators=_operators(doc), path=doc.path, apt_repository=_repository(doc, "apt_repository"),
                  parity_references=_folders(doc, "parity_references"),
                  pull_request_build_hosts=_build_hosts(doc, "pull_request_build_hosts"))
    _apart(doc, infra)
    if doc.problems:
        raise ManifestError(doc.problems)
    return _placed(infra, _lines(doc))


def operators(view: RepoView) -> dict[str, list[str]]:
    """host → operator logins; empty when there is no infra.yaml.  Raises :class:`ManifestError`."""
    return load_infra(view).operators


def _text(doc: Doc, node: yaml.Node | None, value: Any, fld: str, pattern: re.Pattern[str], what: str,
          required: bool = True) -> str | None:
    if value is None:
        if required:
            doc.add(node, fld, f"missing (required): {what}")
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value):
        doc.add(node, fld, f"{shown(value)} is not {what}")
        return None
    return value


def _mapping(doc: Doc, key: str, keys: tuple[str, ...]) -> tuple[dict[str, Any], yaml.Node | None] | None:
    value, node = doc.data.get(key), child(doc.node, key)
    if value is None:
        return None
    if not isinstance(value, dict):
        doc.add(node, key, f"must be a mapping of {', '.join(keys)}")
        return None
    doc.check_keys(node, keys, f"{key}.")  # type: ignore[arg-type]
    return value, node


def _listed(doc: Doc, section: str, keys: tuple[str, ...], what: str,
            empty: bool = True) -> Iterator[tuple[str, dict[str, Any], yaml.Node]]:
    """The mappings of the list ``section`` (field name, value, node), each one's keys checked; a problem for
    anything else (an empty list too, unless ``empty``)."""
    value, node = doc.data.get(section), child(doc.node, section)
    if value is None:
        return
    if not isinstance(value, list) or not isinstance(node, yaml.SequenceNode) or not (value or empty):
        doc.add(node, section, f"must be a list of {what} ({', '.join(keys)})")
        return
    for i, (item, item_node) in enumerate(zip(value, node.value, strict=False)):
        fld = f"{section}[{i}]"
        if not isinstance(item, dict):
            doc.add(item_node, fld, f"must be a mapping of {', '.join(keys)}")
            continue
        doc.check_keys(item_node, keys, f"{fld}.")
        yield fld, item, item_node


def _build_hosts(doc: Doc, section: str = "build_hosts") -> tuple[BuildHost, ...]:
    hosts = []
    for fld, item, item_node in _listed(doc, section, BUILD_KEYS, "build hosts", empty=False):
        ssh = _text(doc, child(item_node, "ssh") or item_node, item.get("ssh"), f"{fld}.ssh", SSH_NAME,
                    "a name of the ssh config")
        workdir = _text(doc, child(item_node, "workdir") or item_node, item.get("workdir"), f"{fld}.workdir",
                        REMOTE_PATH, "a folder on the build host")
        cross = _text(doc, child(item_node, "cross_compile"), item.get("cross_compile"), f"{fld}.cross_compile",
                      PREFIX, "a compiler prefix such as aarch64-linux-gnu-", required=False)
        slots = whole_number(doc, item_node, item, "max_builds", (1, MAX_BUILDS), 1, f"{fld}.max_builds",
                             "builds at once")
        cache = _ccache(doc, item_node, item.get("ccache", CCACHE_SIZE), f"{fld}.ccache")
        if ssh and workdir:
            hosts.append(BuildHost(ssh, workdir, cross, max_builds=slots, ccache=cache))
    return tuple(hosts)


def _ccache(doc: Doc, node: yaml.Node, value: Any, fld: str) -> str | None:
    """A size such as ``5G`` (the compiler cache's limit), or ``off`` (YAML reads it as false): no cache."""
    if value is False:
        return None
    if not isinstance(value, str) or not SIZE.fullmatch(value):
        doc.add(child(node, "ccache"), fld, f"{shown(value)} is not a size such as 5G or 500M, or off")
        return CCACHE_SIZE
    return value


def _repository(doc: Doc, section: str = "repository") -> Repository | None:
    found = _mapping(doc, section, REPO_KEYS)
    if found is None:
        return None
    value, node = found
    checks = {"ssh": (SSH_NAME, "a name of the ssh config"), "path": (REMOTE_PATH, "a folder on that host"),
              "name": (DB_NAME, "a repository name (lowercase, digits, . _ -)"),
              "url": (re.compile(r"(https?|file)://[^\s]{1,400}"), "an http(s) or file:// URL"),
              "key": (FPR, "a key id or fingerprint (16, 40 or 64 hex digits)")}
    got = {k: _text(doc, child(node, k) or node, value.get(k), f"{section}.{k}", pattern, what)
           for k, (pattern, what) in checks.items()}
    home = _text(doc, child(node, "gnupghome"), value.get("gnupghome"), f"{section}.gnupghome", REMOTE_PATH,
                 "a folder on that host", required=False)
    if any(v is None for v in got.values()):
        return None
    return Repository(**{k: str(v) for k, v in got.items()}, gnupghome=home)


def _backup(doc: Doc) -> Folder | None:
    found = _mapping(doc, "backup", FOLDER_KEYS)
    if found is None:
        return None
    value, node = found
    ssh = _text(doc, child(node, "ssh") or node, value.get("ssh"), "backup.ssh", SSH_NAME, "a name of the ssh config")
    path = _text(doc, child(node, "path") or node, value.get("path"), "backup.path", REMOTE_PATH,
                 "a folder on that host")
    return Folder(ssh, path) if ssh and path else None


def _lines(doc: Doc) -> dict[str, str]:
    """``"build_hosts[0]"`` -> ``"fleet/infra.yaml:4"``: the line of each machine's ssh name."""
    lines: dict[str, str] = {}
    for section in TOP_KEYS:
        node = child(doc.node, section)
        items = (list(enumerate(node.value)) if isinstance(node, yaml.SequenceNode)
                 else [(None, node)] if isinstance(node, yaml.MappingNode) else [])
        for i, item in items:
            ssh = child(item, "ssh")
            if ssh is not None:
                lines[section if i is None else f"{section}[{i}]"] = f"{doc.path}:{ssh.start_mark.line + 1}"
    return lines


def _placed(infra: Infra, lines: dict[str, str]) -> Infra:
    """``infra`` with each machine's place in the file, for the messages about it (a validated file: every
    machine is where its index says)."""
    def at(fld: str, obj: Any) -> Any:
        return replace(obj, place=f"{fld}.ssh, {lines[fld]}") if obj is not None and fld in lines else obj

    def each(section: str, objs: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(at(f"{section}[{i}]", o) for i, o in enumerate(objs))

    return replace(infra, build_hosts=each("build_hosts", infra.build_hosts),
                   pull_request_build_hosts=each("pull_request_build_hosts", infra.pull_request_build_hosts),
                   parity_references=each("parity_references", infra.parity_references),
                   repository=at("repository", infra.repository), backup=at("backup", infra.backup),
                   apt_repository=at("apt_repository", infra.apt_repository))


def _apart(doc: Doc, infra: Infra) -> None:
    """A pull request's build runs its code: never on a build host of the default branch."""
    trusted = {b.ssh for b in infra.build_hosts}
    node = child(doc.node, "pull_request_build_hosts")
    for i, bh in enumerate(infra.pull_request_build_hosts):
        if bh.ssh in trusted:
            item = node.value[i] if isinstance(node, yaml.SequenceNode) and i < len(node.value) else node
            doc.add(child(item, "ssh") or item, f"pull_request_build_hosts[{i}].ssh",
                    f"{bh.ssh} is also in build_hosts: a pull request's code would run where the default branch's "
                    "builds are made; use another account or machine")


def _folders(doc: Doc, section: str) -> tuple[Folder, ...]:
    found = []
    for fld, item, item_node in _listed(doc, section, FOLDER_KEYS, "folders"):
        ssh = _text(doc, child(item_node, "ssh") or item_node, item.get("ssh"), f"{fld}.ssh", SSH_NAME,
                    "a name of the ssh config")
        path = _text(doc, child(item_node, "path") or item_node, item.get("path"), f"{fld}.path", REMOTE_PATH,
                     "a folder on that host")
        if path is not None and ".." in path.split("/"):
            doc.add(child(item_node, "path"), f"{fld}.path", f"{shown(path)}: no '..' in a folder's path")
        elif ssh and path:
            found.append(Folder(ssh, path))
    return tuple(found)


def _operators(doc: Doc) -> dict[str, list[str]]:
    value, node = doc.data.get("operators"), child(doc.node, "operators")
    if value is None:
        return {}
    if not isinstance(value, dict):
        doc.add(node, "operators", "must be a mapping of host: [logins]")
        return {}
    found: dict[str, list[str]] = {}
    for host, logins in value.items():
        where = f"operators.{shown(host, 60)}"
        if not isinstance(logins, list) or not all(isinstance(x, str) and x for x in logins):
            doc.add(child(node, str(host)) or node, where, "must be a list of logins")
            continue
        found[str(host)] = list(logins)
    return found
