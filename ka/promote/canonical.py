"""``parity.canonical: HOST:PATH``: the canonical cumulative patch as it lies on a host, over SFTP.

The hand-built package's patch often lives only on the build host
(``boltzmann:~/src/…/0001-…-cumulative-series.patch``).  A manifest may name such a file only
inside a folder of ``parity_references`` in ``fleet/infra.yaml``: anything else is refused
before any connection is made, and after connecting the file's real path (symlinks resolved on
the host) must still lie inside that folder.  A manifest can come from anyone's pull request,
and the bot holds the keys to the fleet's hosts.

What goes wrong on the host (unreachable, a changed key, no such file, no permission) is a
:class:`ReferenceUnavailable`: its message is for the operator; its ``public`` text names no
host, path or error, so a missing file looks like an unreadable one to the world.

One connection per host for a run; each file is read once per run, and with a cache folder
(the bot's), read again only when its size or modification time changed, so a push costs one
``stat`` per file, not a transfer.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import threading
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from ka.errors import KaError, ReferenceRefused, ReferenceUnavailable
from ka.fleet.infra import Folder, Infra
from ka.fleet.manifest import list_hosts, load_manifest
from ka.fleet.repo import RepoView
from ka.io.ssh import Remote, SshError, SshSettings, connect
from ka.limits import Limits

Log = Callable[[str], None]
PUBLIC = ReferenceUnavailable.public


def normal_path(path: str) -> str:
    """SFTP takes a relative path from the login's home: ``~/x`` and ``x`` are the same file."""
    return posixpath.normpath(path.removeprefix("~/")) if path not in ("~", "~/") else "."


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def named_references(view: RepoView) -> set[tuple[str, str]]:
    """The ``parity.canonical: HOST:PATH`` references the manifests of ``view`` name (a manifest that does not
    load names none)."""
    named = set()
    for host in list_hosts(view):
        try:
            remote = load_manifest(view, host).parity.remote
        except KaError:
            continue
        if remote is not None:
            named.add(remote)
    return named


def allowed_folder(host: str, path: str, folders: Sequence[Folder]) -> Folder | None:
    """The folder of ``parity_references`` that holds ``host:path``, as written (no connection), or None."""
    wanted = normal_path(path)
    return next((f for f in folders if f.ssh == host and _inside(wanted, normal_path(f.path))), None)


class SftpCanonical:
    """:class:`ka.promote.flow.RemoteFiles` over SFTP; :meth:`close` when the run is done."""

    def __init__(self, ssh: SshSettings, folders: Sequence[Folder], limits: Limits | None = None,
                 cache: Path | None = None, log: Log = lambda line: None, infra_path: str = "fleet/infra.yaml") -> None:
        self.ssh, self.limits, self.cache, self.log = ssh, limits or Limits(), cache, log
        self.folders, self.infra_path = tuple(folders), infra_path
        self._remotes: dict[str, Remote] = {}
        self._read: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()  # promote_each reads hosts on several threads

    def read(self, host: str, path: str) -> bytes:
        """The file ``path`` on ``host`` (``~/`` is the login's home), inside a folder of ``parity_references``."""
        folder = allowed_folder(host, path, self.folders)
        if folder is None:
            raise ReferenceRefused(f"parity.canonical: {host}:{path} is not inside a folder of parity_references in "
                                   f"{self.infra_path}: nothing was read (add the folder there to compare with it)")
        key = (host, normal_path(path))
        with self._lock:
            if key not in self._read:
                try:
                    self._read[key] = self._fetch(host, key[1], normal_path(folder.path))
                except SshError as exc:
                    raise ReferenceUnavailable(f"{PUBLIC}: {exc}") from None
            return self._read[key]

    def _remote(self, host: str) -> Remote:
        if host not in self._remotes:
            self._remotes[host] = connect(self.ssh, host)
        return self._remotes[host]

    def _fetch(self, host: str, path: str, folder: str) -> bytes:
        remote = self._remote(host)
        real, real_folder = remote.realpath(path), remote.realpath(folder)
        if real is None or real_folder is None:
            raise SshError(f"parity.canonical: {host}:{path}: no such file")
        if not _inside(real, real_folder):
            raise SshError(f"parity.canonical: {host}:{path} is {real}, outside {real_folder} (a symlink)")
        found = remote.stat(path)
        if found is None:
            raise SshError(f"parity.canonical: {host}:{path}: no such file")
        size, mtime = found
        cached = self._cached(host, path, size, mtime)
        if cached is not None:
            self.log(f"canonical {host}:{path}: unchanged ({size} bytes), from the cache")
            return cached
        data, size, mtime = remote.read(path, self.limits.file)
        self.log(f"canonical {host}:{path}: read {size} bytes")
        self._store(host, path, size, mtime, data)
        return data

    def _paths(self, host: str, path: str) -> tuple[Path, Path] | None:
        if self.cache is None:
            return None
        name = hashlib.sha256(f"{host}:{path}".encode()).hexdigest()[:32]
        return self.cache / f"{name}.patch", self.cache / f"{name}.json"

    def _cached(self, host: str, path: str, size: int, mtime: int) -> bytes | None:
        paths = self._paths(host, path)
        if paths is None or not paths[1].is_file():
            return None
        try:
            meta = json.loads(paths[1].read_text())
            data = paths[0].read_bytes()
        except (OSError, ValueError):
            return None
        return data if (meta.get("size"), meta.get("mtime")) == (size, mtime) and len(data) == size else None

    def _store(self, host: str, path: str, size: int, mtime: int, data: bytes) -> None:
        paths = self._paths(host, path)
        if paths is None:
            return
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        paths[0].write_bytes(data)
        paths[1].write_text(json.dumps({"host": host, "path": path, "size": size, "mtime": mtime}))

    def close(self) -> None:
        for remote in self._remotes.values():
            remote.close()
        self._remotes.clear()


def references(ssh: SshSettings, infra: Infra, limits: Limits | None = None, cache: Path | None = None,
               log: Log = lambda line: None, named: Callable[[], Collection[tuple[str, str]]] | None = None,
               where: str = "") -> SftpCanonical | OnlyNamed:
    """The reader of parity references for one run: inside ``infra``'s ``parity_references``, and for a commit
    that is not on the default branch (``named`` given) only those the default branch's manifests name."""
    reader = SftpCanonical(ssh, infra.parity_references, limits, cache, log, infra_path=infra.path + where)
    return reader if named is None else OnlyNamed(reader, named)


class OnlyNamed:
    """The parity references a commit not on the default branch may read: those the default branch's own
    manifests name, and no other file, even in an allowed folder.

    A mismatch reports the offset of the first differing byte, so a pull request comparing files of
    its own making with a reference could read it byte by byte; the files the fleet's maintainers
    name as references are the cumulative patches the hand-built packages shipped, which are meant
    to be the repository's own.  ``named`` is asked once, when a reference is first read.
    """

    def __init__(self, inner: SftpCanonical, named: Callable[[], Collection[tuple[str, str]]]) -> None:
        self.inner, self._named = inner, named
        self._known: set[tuple[str, str]] | None = None

    def read(self, host: str, path: str) -> bytes:
        if self._known is None:
            self._known = {(h, normal_path(p)) for h, p in self._named()}
        if (host, normal_path(path)) not in self._known:
            raise ReferenceRefused(f"parity.canonical: {host}:{path}: a commit that is not on the default branch may "
                                   "compare only with the parity references the default branch's manifests name: "
                                   "nothing was read")
        return self.inner.read(host, path)

    def close(self) -> None:
        self.inner.close()
