"""``parity.canonical: HOST:PATH``: the canonical cumulative patch as it lies on a host, over SFTP.

The hand-built package's patch often lives only on the build host
(``boltzmann:~/src/…/0001-…-cumulative-series.patch``).  One connection per host for a run;
each file is read once per run, and with a cache folder (the bot's), read again only when its
size or modification time changed, so a push costs one ``stat`` per file, not a transfer.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

from ka.limits import Limits
from ka.ssh import Remote, SshError, SshSettings, connect

Log = Callable[[str], None]


class SftpCanonical:
    """:class:`ka.promote.RemoteFiles` over SFTP; :meth:`close` when the run is done."""

    def __init__(self, ssh: SshSettings, limits: Limits | None = None, cache: Path | None = None,
                 log: Log = lambda line: None) -> None:
        self.ssh, self.limits, self.cache, self.log = ssh, limits or Limits(), cache, log
        self._remotes: dict[str, Remote] = {}
        self._read: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()  # promote_each reads hosts on several threads

    def read(self, host: str, path: str) -> bytes:
        """The file ``path`` on ``host`` (``~/`` is the login's home)."""
        key = (host, path.removeprefix("~/"))
        with self._lock:
            if key not in self._read:
                self._read[key] = self._fetch(*key)
            return self._read[key]

    def _remote(self, host: str) -> Remote:
        if host not in self._remotes:
            self._remotes[host] = connect(self.ssh, host)
        return self._remotes[host]

    def _fetch(self, host: str, path: str) -> bytes:
        remote = self._remote(host)
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
