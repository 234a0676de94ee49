"""What ka-build published: the package repository's database, read on the repository host.

``repo-add`` keeps one entry per package name, the newest, so the database answers "which is the
newest package built for this host".  Its ``desc`` records give the file name, the version and
the sha256; a fetched package is checked against that sum and against its signature.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from ka.errors import EXIT_ENVIRONMENT, KaError
from ka.fleet.formats import PACMAN
from ka.fleet.infra import Repository
from ka.io.ssh import Remote, SshSettings, connect

DB_LIMIT = 64 << 20


class NotPublished(KaError):
    """The repository has no such package, or it cannot be fetched intact."""

    exit_code = EXIT_ENVIRONMENT


@dataclass(frozen=True)
class Entry:
    """One package of the repository database."""

    name: str
    base: str
    version: str
    filename: str
    sha256: str


def parse_db(text: str) -> dict[str, Entry]:
    """The ``desc`` records of ``bsdtar -xOf <repo>.db.tar.zst`` (concatenated): name → entry."""
    found: dict[str, Entry] = {}
    for block in text.split("%FILENAME%")[1:]:
        fields: dict[str, list[str]] = {"FILENAME": []}
        key = "FILENAME"
        for line in block.splitlines():
            if line.startswith("%") and line.endswith("%") and len(line) > 2:
                key = line.strip("%")
                fields.setdefault(key, [])
            elif line:
                fields.setdefault(key, []).append(line)
        name, file = fields.get("NAME", [""])[0], fields["FILENAME"][0] if fields["FILENAME"] else ""
        if name and file:
            found[name] = Entry(name, fields.get("BASE", [name])[0], fields.get("VERSION", [""])[0], file,
                                fields.get("SHA256SUM", [""])[0])
    return found


def database(remote: Remote, repo: Repository) -> dict[str, Entry]:
    """Every package the repository lists (empty when it has no database yet)."""
    name = f"{repo.name}.db.tar.zst"
    if remote.stat(posixpath.join(repo.path, name)) is None:
        return {}
    text = remote.output(["bsdtar", "-xOf", posixpath.join(repo.path, name)], limit=DB_LIMIT)
    return parse_db(text.decode("utf-8", "replace"))


def newest(ssh: SshSettings, repo: Repository, pkgname: str) -> Entry:
    """The entry of ``pkgname``; :class:`NotPublished` when the repository has none."""
    with connect(ssh, repo.ssh, repo.role) as remote:
        entry = database(remote, repo).get(pkgname)
    if entry is None:
        raise NotPublished(f"{repo.ssh}:{repo.path}/{repo.name}.db.tar.zst lists no {pkgname}: build and publish "
                           f"it first (ka-build), or give --package FILE")
    return entry


def fetch(ssh: SshSettings, repo: Repository, entry: Entry, folder: Path) -> Path:
    """Download ``entry``'s package and signature into ``folder``; the sha256 must be the database's."""
    if "/" in entry.filename or entry.filename.startswith(".") or not entry.filename.endswith(PACMAN.extension):
        raise NotPublished(f"{repo.name}.db.tar.zst: {entry.name} has the file name {entry.filename!r}, "
                           "which is not a package file's name")
    folder.mkdir(parents=True, exist_ok=True)
    local = folder / entry.filename
    with connect(ssh, repo.ssh, repo.role) as remote:
        for name in (entry.filename, entry.filename + ".sig"):
            where = posixpath.join(repo.path, name)
            if remote.stat(where) is None:
                raise NotPublished(f"{repo.ssh}:{where}: missing, although the database lists {entry.name} "
                                   f"{entry.version}")
            part = folder / f".{name}.{os.getpid()}.part"  # another run may be reading the finished one
            remote.get(where, part)
            part.replace(folder / name)
    got = hashlib.sha256(local.read_bytes()).hexdigest()
    if entry.sha256 and got != entry.sha256:
        raise NotPublished(f"{local.name}: sha256 {got[:16]}… is not the database's {entry.sha256[:16]}…: the "
                           "download or the repository is damaged; nothing was installed")
    return local
