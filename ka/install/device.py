"""A fleet host as ka-install sees it: commands as root behind the prefix, files, the lock, the record.

Everything goes through one :class:`ka.io.ssh.Remote` (pinned host key, argument lists).  Files
only root may read (an initramfs is mode 600) are read through ``cat`` behind the prefix.  A file
is written by uploading it to a private folder over SFTP, installing it as root beside its place
(``<name>.ka-new``), syncing, and renaming it over the old one (``mv -T``), so the old file stays
whole until the new one is on disk.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ka.errors import EXIT_CHECK_FAILED, KaError
from ka.fleet.installspec import InstallSpec
from ka.io.ssh import Completed, Remote, RemoteFailed
from ka.text import cap

RECORD = "install.json"
LOCK = "install.lock"
_VERSION = re.compile(r"[A-Za-z0-9._+:~-]{1,100}")


class LockHeld(KaError):
    """Another install holds the host's lock."""

    exit_code = EXIT_CHECK_FAILED


@dataclass
class FileInfo:
    """A file in the boot folder."""

    path: str
    sha256: str
    size: int
    mtime: int


class Device:
    """The host of one install: ``remote`` plus how the manifest says to act on it."""

    def __init__(self, remote: Remote, spec: InstallSpec, log: Callable[[str], None] = lambda line: None) -> None:
        self.remote, self.spec, self.log = remote, spec, log
        self.name = remote.name
        self._tmp: str | None = None

    # --- commands ---------------------------------------------------------------------------

    def root(self, argv: list[str], *, timeout: float = 300, check: bool = True,
             on_line: Callable[[str], None] | None = None) -> Completed:
        """``argv`` as root (behind the prefix)."""
        return self.remote.run(self.spec.root(*argv), timeout=timeout, check=check, on_line=on_line)

    def release(self) -> str:
        """The running kernel's release (the ``release`` command's first line)."""
        out = self.remote.run(list(self.spec.commands.release), timeout=60).output.strip().splitlines()
        if not out or not _VERSION.fullmatch(out[0].strip()):
            raise KaError(f"{self.name}: {' '.join(self.spec.commands.release)} printed {cap(repr(out[:1]), 80)}, "
                          "not a kernel release")
        return out[0].strip()

    def installed(self, name: str | None = None) -> str | None:
        """The version pacman (or dpkg, on an apt host) has installed of ``name`` (the kernel package), or None."""
        ask = {"pacman": self._pacman_version, "deb": self._dpkg_version}[self.spec.kind.name]
        return ask(name or self.spec.pkgbase)

    def _pacman_version(self, name: str) -> str | None:
        res = self.remote.run([*self.spec.commands.pacman, "-Q", name], timeout=60, check=False)
        words = res.output.split()
        return words[1] if res.ok and len(words) == 2 and _VERSION.fullmatch(words[1]) else None

    def _dpkg_version(self, name: str) -> str | None:
        status, version = self._dpkg(name)
        return version if status == "installed" and _VERSION.fullmatch(version) else None

    def deb_status(self, name: str) -> str:
        """dpkg's state of a package (``installed``, ``half-configured``, ``config-files``, …; ``not-installed``)."""
        return self._dpkg(name)[0]

    def _dpkg(self, name: str) -> tuple[str, str]:
        res = self.remote.run(["dpkg-query", "-W", "-f", "${db:Status-Status} ${Version}", name], timeout=60,
                              check=False)
        words = res.output.split()
        return (words[0], words[1] if len(words) > 1 else "") if res.ok and words else ("not-installed", "")

    def exists(self, path: str) -> bool:
        return self.root(["test", "-e", path], timeout=60, check=False).ok

    def read(self, path: str, limit: int = 4 << 20) -> bytes:
        """A file's bytes, read as root."""
        return self.remote.output(self.spec.root("cat", "--", path), limit=limit)

    def tmp(self) -> str:
        """A private folder of the ssh user on the host for this install (``mktemp -d``)."""
        if self._tmp is None:
            self._tmp = self.remote.run(["mktemp", "-d", "-t", "ka-install.XXXXXXXX"], timeout=60).output.strip()
        return self._tmp

    def write(self, path: str, data: bytes, mode: str = "644", sync: bool = False) -> None:
        """Put ``data`` at ``path`` as root, replacing the old file in one rename (synced first with ``sync``)."""
        staged = posixpath.join(self.tmp(), posixpath.basename(path) + ".new")
        with self.remote.sftp.open(staged, "wb") as fh:
            fh.write(data)
        for argv in self.write_commands(path, mode, sync, staged):
            self.remote.run(argv, timeout=120)

    def write_commands(self, path: str, mode: str = "644", sync: bool = False, staged: str = "<tmp>/new") -> list[
            list[str]]:
        """The commands :meth:`write` runs after the upload (for ``--dry-run``)."""
        beside = f"{path}.ka-new"
        cmds = [self.spec.root("install", "-D", "-m", mode, "--", staged, beside)]
        if sync:
            cmds.append(self.spec.root("sync", "--", beside))
        cmds.append(self.spec.root("mv", "-T", "--", beside, path))
        if sync:
            cmds.append(self.spec.root("sync", "--", path))
        return cmds

    def reconnected(self, remote: Remote, keep_tmp: bool = False) -> None:
        """Go on over a new connection (after a reboot the private folder went with the old boot; after a
        dropped connection, ``keep_tmp``, it is still there)."""
        self.remote.close()
        self.remote = remote
        if not keep_tmp:
            self._tmp = None

    def cleanup(self) -> None:
        """Remove the private folder (best effort: the host may be gone)."""
        if self._tmp is not None:
            with contextlib.suppress(KaError):
                self.remote.run(["rm", "-rf", "--", self._tmp], timeout=60, check=False)
            self._tmp = None

    # --- the boot folder ----------------------------------------------------------------------

    def boot_files(self) -> dict[str, FileInfo]:
        """The regular files directly in the boot folder: path → sha256, size, mtime."""
        listing = self.root(["find", self.spec.boot, "-maxdepth", "1", "-type", "f", "-printf", r"%s %T@ %p\n"],
                            timeout=120).output
        sums = self.sums([self.spec.boot], depth=1)
        found = {}
        for line in listing.splitlines():
            size, mtime, path = line.split(" ", 2)
            found[path] = FileInfo(path, sums.get(path, ""), int(size), int(float(mtime)))
        return found

    def sums(self, paths: list[str], depth: int | None = None) -> dict[str, str]:
        """sha256 of every regular file under ``paths``: path → digest."""
        argv = ["find", *paths, *(["-maxdepth", str(depth)] if depth else []), "-type", "f", "-exec", "sha256sum",
                "--", "{}", "+"]
        out = self.root(argv, timeout=900).output
        found = {}
        for line in out.splitlines():
            digest, _, path = line.partition("  ")
            if len(digest) == 64:
                found[path] = digest
        return found

    def free(self, path: str) -> int:
        """Bytes free for new files in the filesystem of ``path``."""
        free = self.remote.free(path)
        if free is None:
            raise KaError(f"{self.name}: cannot tell the free space of {path} (stat -f)")
        return free

    def size(self, paths: list[str]) -> int:
        """Bytes used by ``paths`` (``du``), 0 for those that do not exist."""
        present = [p for p in paths if self.exists(p)]
        if not present:
            return 0
        out = self.root(["du", "-s", "-B1", "-c", "--", *present], timeout=300).output.splitlines()
        return int(out[-1].split()[0]) if out else 0

    # --- the lock and the record --------------------------------------------------------------

    @property
    def lock_path(self) -> str:
        return posixpath.join(self.spec.state, LOCK)

    def lock(self, owner: str) -> None:
        """Take the host's install lock (an atomic ``mkdir``); :class:`LockHeld` when someone has it."""
        self.root(["mkdir", "-p", "--", self.spec.state], timeout=60)
        if not self.root(["mkdir", "--", self.lock_path], timeout=60, check=False).ok:
            raise LockHeld(f"{self.name}: another install holds {self.lock_path} ({self.lock_owner()}); it waits "
                           f"for that one to end.  If none runs (a crash), remove the folder on the host: "
                           f"{' '.join(self.spec.root('rm', '-rf', self.lock_path))}")
        self.write(posixpath.join(self.lock_path, "owner"), f"{owner} since {now()}\n".encode())

    def lock_owner(self) -> str:
        try:
            return self.read(posixpath.join(self.lock_path, "owner"), 4096).decode("utf-8", "replace").strip()
        except KaError:
            return "owner unknown"

    def unlock(self) -> None:
        self.root(["rm", "-rf", "--", self.lock_path], timeout=60)

    def locked(self) -> str | None:
        """Who holds the lock, or None."""
        return self.lock_owner() if self.exists(self.lock_path) else None

    def record(self) -> dict[str, Any]:
        """The host's install record (``<state>/install.json``); empty before the first install."""
        path = posixpath.join(self.spec.state, RECORD)
        if not self.exists(path):
            return {}
        try:
            data = json.loads(self.read(path, 1 << 20))
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def save_record(self, record: dict[str, Any]) -> None:
        self.write(posixpath.join(self.spec.state, RECORD), json.dumps(record, indent=2, sort_keys=True).encode())


def now() -> str:
    """The time, as records write it (UTC, ISO 8601)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def dropped(exc: BaseException) -> bool:
    """True when a command failed because the connection went away (a reboot under it)."""
    return isinstance(exc, RemoteFailed) and exc.code == -1
