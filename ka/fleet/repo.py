"""Read the kernel-agent repository: from a working tree or from a commit.

Promote reads ``fleet/`` and ``patches/`` through a :class:`RepoView`, so
the same code serves the operator's checkout and a pushed commit read
straight from git objects (no checkout).  Both views refuse paths that
leave the repository and symlinks that point outside ``patches/``.
"""

from __future__ import annotations

import os
import posixpath
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ka.errors import BadInput
from ka.io.runner import run
from ka.limits import Limits, TooLarge
from ka.text import printable

FILE, DIR = "file", "dir"
_MAX_LINKS = 8
#: blobs read are kept in memory up to this many bytes, least recently used first out: manifests
#: and series files are read many times, and a push must not keep every patch it read
_CACHE_BYTES = 8 * 1024 * 1024


class PathEscapes(BadInput):
    """A path, or a symlink it goes through, leaves the area it must stay in."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{printable(path)}: a symlink leads outside fleet/ or patches/ (or outside the repository, "
                         "or into .git)")
        self.path = path


class RepoView(Protocol):
    """Read-only access to the repository's files by POSIX relative path."""

    root: Path
    limits: Limits

    @property
    def rev(self) -> str | None:
        """The commit read from, or None for a work tree."""

    def kind(self, path: str) -> str | None:
        """``"file"``, ``"dir"`` or None; follows symlinks that stay inside fleet/ or patches/."""

    def read(self, path: str) -> bytes:
        """The bytes of a file; :class:`TooLarge` over the view's per-file cap."""

    def size(self, path: str) -> int:
        """The size of a file in bytes."""

    def tracked(self, path: str) -> bool:
        """False for a file of a git work tree that git does not track."""

    def listdir(self, path: str) -> list[str]:
        """Names in a folder, sorted by code point."""

    def display(self, path: str) -> str:
        """How to name ``path`` in messages."""


def clean_relpath(path: str) -> str | None:
    """Normalise a repository-relative path; None when it is absolute, leaves the root or enters ``.git``."""
    if not path or path.startswith("/") or "\0" in path:
        return None
    norm = posixpath.normpath(path)
    if norm == ".." or norm.startswith("../"):
        return None
    if any(part.casefold() == ".git" for part in norm.split("/")):
        return None  # git's own files (config holds remote URLs, tokens among them) are never content
    return norm


def _inside(path: str, jail: str) -> bool:
    return path == jail or path.startswith(jail + "/")


class WorkTree:
    """A view of the repository's files on disk."""

    def __init__(self, root: Path, limits: Limits | None = None) -> None:
        self.root = root.resolve()
        self.limits = limits or Limits()
        self._folders: dict[str, str] = {}  # a folder's real path, resolved once: a series reads many files

    @property
    def rev(self) -> str | None:
        return None

    def _realpath(self, path: str) -> str:
        """``os.path.realpath`` of ``root/path``, its folder's part resolved once per view."""
        folder, name = posixpath.split(path)
        if name in ("", ".", ".."):
            return os.path.realpath(os.path.join(self.root, path))
        base = self._folders.get(folder)
        if base is None:
            base = self._folders[folder] = os.path.realpath(os.path.join(self.root, folder))
        full = os.path.join(base, name)
        return os.path.realpath(full) if os.path.islink(full) else full

    def _real(self, path: str) -> Path:
        real, root = self._realpath(path), str(self.root)
        if real != root and not real.startswith(root.rstrip("/") + "/"):
            raise PathEscapes(path)
        rel = real[len(root):].lstrip("/")
        if rel and clean_relpath(rel) is None:
            raise PathEscapes(path)  # a symlink into .git
        for area in ("patches", "fleet"):
            if _inside(path, area) and not _inside(rel, area):
                raise PathEscapes(path)
        return Path(real)

    def kind(self, path: str) -> str | None:
        real = self._real(path)
        if real.is_dir():
            return DIR
        return FILE if real.is_file() else None

    def read(self, path: str) -> bytes:
        real = self._real(path)
        with open(real, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > self.limits.file:
                raise TooLarge(self.display(path), size, self.limits.file, "a patch or series file", "KA_MAX_PATCH")
            return fh.read(self.limits.file + 1)

    def size(self, path: str) -> int:
        return self._real(path).stat().st_size

    def tracked(self, path: str) -> bool:
        inside = run(["git", "-C", self.root, "rev-parse", "--is-inside-work-tree"], check=False)
        if not inside.ok or inside.text().strip() != "true":
            return True  # not a git work tree: every file is the user's to name
        real = self._real(path).relative_to(self.root).as_posix()  # a tracked symlink to an untracked file is not
        return all(run(["git", "-C", self.root, "--literal-pathspecs", "ls-files", "--error-unmatch", "--", p],
                       check=False).ok for p in dict.fromkeys((path, real)))

    def listdir(self, path: str) -> list[str]:
        return sorted(p.name for p in self._real(path).iterdir())

    def display(self, path: str) -> str:
        return path


@dataclass(frozen=True)
class _Entry:
    mode: str
    oid: str
    size: int


class GitTree:
    """A view of ``fleet/``, ``patches/`` (and anything else) at one commit, read from objects."""

    def __init__(self, repo: Path, rev: str, limits: Limits | None = None) -> None:
        self.root = repo
        self.limits = limits or Limits()
        self.commit = resolve_commit(repo, rev)
        self._entries = self._list()
        self._dirs = self._folders()
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cached = 0
        self._lock = threading.Lock()  # promote_each reads hosts on several threads

    @property
    def rev(self) -> str:
        return self.commit

    def _list(self) -> dict[str, _Entry]:
        out = run(["git", "-C", self.root, "ls-tree", "-r", "-z", "-l", "--full-tree", self.rev]).stdout
        entries = {}
        for record in out.split(b"\0"):
            if not record:
                continue
            meta, _, name = record.partition(b"\t")
            mode, _type, oid, size = meta.decode().split()
            entries[name.decode("utf-8", "surrogateescape")] = _Entry(mode, oid, int(size) if size.isdigit() else 0)
        return entries

    def _folders(self) -> dict[str, set[str]]:
        dirs: dict[str, set[str]] = {"": set()}
        for path in self._entries:
            parent, _, name = path.rpartition("/")
            while True:
                dirs.setdefault(parent, set()).add(name)
                if not parent:
                    break
                parent, _, name = parent.rpartition("/")
        return dirs

    def _resolve(self, path: str) -> str:
        """Follow symlinks (stored as blobs) in every component of ``path``."""
        for _ in range(_MAX_LINKS + 1):
            hop = self._first_link(path)
            if hop is None:
                return path
            link, rest = hop
            target = self._blob(self._entries[link].oid).decode("utf-8", "surrogateescape")
            joined = posixpath.normpath(posixpath.join(posixpath.dirname(link), target, rest))
            if target.startswith("/") or clean_relpath(joined) is None:
                raise PathEscapes(path)
            self._check_area(path, joined)
            path = joined
        raise PathEscapes(path)  # a symlink loop, or a chain longer than any patch tree needs

    def _check_area(self, asked: str, real: str) -> None:
        for area in ("patches", "fleet"):
            if _inside(asked, area) and not _inside(real, area):
                raise PathEscapes(asked)

    def _first_link(self, path: str) -> tuple[str, str] | None:
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            head = "/".join(parts[:i])
            entry = self._entries.get(head)
            if entry is not None and entry.mode == "120000":
                return head, "/".join(parts[i:])
        return None

    def _blob(self, oid: str, size: int = 0) -> bytes:
        with self._lock:
            if oid in self._cache:
                self._cache.move_to_end(oid)
                return self._cache[oid]
        data = run(["git", "-C", self.root, "cat-file", "blob", oid]).stdout
        if len(data) <= _CACHE_BYTES // 8:
            with self._lock:
                if oid not in self._cache:
                    self._cache[oid] = data
                    self._cached += len(data)
                while self._cached > _CACHE_BYTES:
                    self._cached -= len(self._cache.popitem(last=False)[1])
        return data

    def kind(self, path: str) -> str | None:
        path = self._resolve(path)
        if path in self._dirs:
            return DIR
        entry = self._entries.get(path)
        return FILE if entry is not None and entry.mode.startswith("100") else None

    def _file(self, path: str) -> _Entry:
        entry = self._entries.get(self._resolve(path))
        if entry is None or not entry.mode.startswith("100"):
            raise FileNotFoundError(f"{self.display(path)}: not a file")
        return entry

    def read(self, path: str) -> bytes:
        entry = self._file(path)
        if entry.size > self.limits.file:
            raise TooLarge(self.display(path), entry.size, self.limits.file, "a patch or series file", "KA_MAX_PATCH")
        return self._blob(entry.oid, entry.size)

    def size(self, path: str) -> int:
        return self._file(path).size

    def tracked(self, path: str) -> bool:
        return True  # read from a commit: tracked by definition

    def listdir(self, path: str) -> list[str]:
        return sorted(self._dirs.get(self._resolve(path), ()))

    def display(self, path: str) -> str:
        return f"{self.rev[:12]}:{path}"


def resolve_commit(repo: Path, rev: str) -> str:
    """The full commit id of ``rev`` in ``repo``, or a BadInput naming it."""
    if rev.startswith("-"):
        raise BadInput(f"--rev {rev!r}: not a revision")
    res = run(["git", "-C", repo, "rev-parse", "--verify", "--quiet", "--end-of-options",
               f"{rev}^{{commit}}"], check=False)
    if not res.ok:
        raise BadInput(f"--rev {rev}: no such commit in {repo}")
    return res.text().strip()


def find_repo(start: Path) -> Path:
    """The nearest folder at or above ``start`` holding both ``fleet/`` and ``patches/``."""
    here = start.resolve()
    for folder in (here, *here.parents):
        if (folder / "fleet").is_dir() and (folder / "patches").is_dir():
            return folder
    raise BadInput(
        f"{start}: no kernel-agent repository here or above (a folder with fleet/ and patches/); "
        "run from inside one or give --repo DIR"
    )


def git_toplevel(folder: Path) -> Path | None:
    """The git work tree (or bare repository) holding ``folder``, if any."""
    res = run(["git", "-C", folder, "rev-parse", "--show-toplevel"], check=False)
    if res.ok and res.text().strip():
        return Path(res.text().strip())
    bare = run(["git", "-C", folder, "rev-parse", "--is-bare-repository"], check=False)
    return folder if bare.ok and bare.text().strip() == "true" else None
