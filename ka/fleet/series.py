"""Patch series: resolve a manifest's includes into ordered patch files.

A series is a folder ``patches/<scope>/<name>/`` (order from its quilt
``series`` file, else ``*.patch`` in natural file-name order) or one file
``patches/<scope>/<name>.patch``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ka.errors import ManifestError, Problem
from ka.fleet.manifest import Include, Manifest
from ka.fleet.repo import FILE, PathEscapes, RepoView, clean_relpath
from ka.limits import TooLarge

PATCHES = "patches"
_DIGITS = re.compile(r"(\d+)")
_STRIP_OK = {"-p1", "-p", "1"}


@dataclass(frozen=True)
class PatchFile:
    """One patch file of a series, with its bytes."""

    path: str
    data: bytes


@dataclass(frozen=True)
class Series:
    """An include resolved to its ordered patch files."""

    include: Include
    path: str
    patches: tuple[PatchFile, ...]

    def as_dict(self) -> dict[str, object]:
        """JSON shape: ``{include, scope, patches}``."""
        return {"include": self.include.text, "scope": self.include.scope,
                "patches": [p.path for p in self.patches]}


def natural_key(name: str) -> list[object]:
    """Sort key that orders ``2.patch`` before ``10.patch``; independent of locale."""
    return [(0, int(part), part) if part.isdigit() else (1, part, part)
            for part in _DIGITS.split(name) if part]


def parse_series_file(text: str) -> list[tuple[int, str, list[str]]]:
    """Quilt ``series`` lines as ``(line, name, options)``; comments and blanks dropped."""
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].split("\t#", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        name, *options = line.split()
        entries.append((number, name, options))
    return entries


class _Resolver:
    def __init__(self, view: RepoView, manifest: Manifest) -> None:
        self.view = view
        self.manifest = manifest
        self.problems: list[Problem] = []

    def fail(self, inc: Include, message: str) -> None:
        self.problems.append(Problem(self.manifest.path, inc.line, f"includes ({inc.text})", message))

    def fail_at(self, where: str, line: int, message: str) -> None:
        self.problems.append(Problem(self.view.display(where), line, "", message))

    def kind(self, path: str) -> str | None:
        try:
            return self.view.kind(path)
        except PathEscapes:
            return "escapes"

    def resolve(self, inc: Include) -> tuple[str, list[str]] | None:
        """The series' path and its patch files in order, or None (a problem was recorded)."""
        base = f"{PATCHES}/{inc.text}"
        if inc.text.endswith(".patch"):
            candidates = [(base, self.kind(base))]
        else:
            candidates = [(base, self.kind(base)), (base + ".patch", self.kind(base + ".patch"))]
        for path, kind in candidates:
            if kind == "escapes":
                self.fail(inc, f"{path} is a symlink that leaves patches/")
                return None
        present = [(p, k) for p, k in candidates if k is not None]
        if not present:
            looked = " and ".join(p + ("/" if i == 0 and len(candidates) > 1 else "")
                                  for i, (p, _) in enumerate(candidates))
            self.fail(inc, f"series '{inc.text}' does not exist (looked for {looked})")
            return None
        if len(present) > 1 and all(k is not None for _, k in present):
            self.fail(inc, f"series '{inc.text}' is ambiguous: both {present[0][0]}/ and {present[1][0]} exist")
            return None
        path, kind = present[0]
        if kind == FILE:
            return path, [path]
        return self._folder(inc, path)

    def _folder(self, inc: Include, folder: str) -> tuple[str, list[str]] | None:
        series_path = f"{folder}/series"
        if self.kind(series_path) == FILE:
            names = self._from_series_file(inc, series_path)
        else:
            names = self._from_listing(inc, folder)
        if names is None:
            return None
        if not names:
            self.fail(inc, f"series '{inc.text}' is empty ({folder}/ has no patches)")
            return None
        return folder, names

    def read(self, inc: Include, path: str, files: list[str]) -> Series:
        """The series with the bytes of its files; an empty single-file series is a problem."""
        patches = tuple(PatchFile(p, self.view.read(p)) for p in files)
        if path.endswith(".patch") and not patches[0].data.strip():
            self.fail(inc, f"series '{inc.text}' is empty ({path} holds no patch)")
        return Series(inc, path, patches)

    def _from_listing(self, inc: Include, folder: str) -> list[str] | None:
        names = sorted((n for n in self.view.listdir(folder) if n.endswith(".patch")), key=natural_key)
        paths = []
        for name in names:
            kind = self.kind(f"{folder}/{name}")
            if kind == "escapes":
                self.fail(inc, f"{folder}/{name} is a symlink that leaves patches/")
                return None
            if kind == FILE:
                paths.append(f"{folder}/{name}")
        return paths

    def _from_series_file(self, inc: Include, series_path: str) -> list[str] | None:
        folder = series_path.rsplit("/", 1)[0]
        text = self.view.read(series_path).decode("utf-8", "replace")
        paths, ok = [], True
        for line, name, options in parse_series_file(text):
            path = self._series_entry(series_path, folder, line, name, options)
            ok = ok and path is not None
            if path is not None:
                paths.append(path)
        return paths if ok else None

    def _series_entry(self, series_path: str, folder: str, line: int, name: str,
                      options: list[str]) -> str | None:
        bad = [o for o in options if o not in _STRIP_OK]
        if bad:
            self.fail_at(series_path, line, f"option {' '.join(bad)} for '{name}' is not supported: "
                         "patches are concatenated and applied with -p1")
            return None
        rel = clean_relpath(name)
        if rel is None:
            self.fail_at(series_path, line, f"'{name}' leaves the series folder")
            return None
        path = f"{folder}/{rel}"
        kind = self.kind(path)
        if kind == "escapes":
            self.fail_at(series_path, line, f"'{name}' is a symlink that leaves patches/")
        elif kind != FILE:
            self.fail_at(series_path, line, f"'{name}' is listed but {path} does not exist")
        else:
            return path
        return None


def resolve_series(view: RepoView, manifest: Manifest) -> list[Series]:
    """The manifest's series in apply order: scopes by ``apply_order``, then manifest order.

    Raises :class:`ManifestError` naming every include or series line that is wrong, and
    :class:`TooLarge` (before reading any patch) when the host's patches add up to more than
    the cumulative cap.
    """
    resolver = _Resolver(view, manifest)
    ordered = sorted(manifest.includes, key=lambda inc: manifest.apply_order.index(inc.scope))
    found = [(inc, resolver.resolve(inc)) for inc in ordered]
    if resolver.problems:
        raise ManifestError(resolver.problems)
    located = [(inc, hit) for inc, hit in found if hit is not None]
    total = sum(view.size(p) for _, (_, files) in located for p in files)
    if total > view.limits.cumulative:
        raise TooLarge(manifest.path, total, view.limits.cumulative, "a host's cumulative patch",
                       "KA_MAX_CUMULATIVE", subject="the cumulative patch")
    series = [resolver.read(inc, path, files) for inc, (path, files) in located]
    if resolver.problems:
        raise ManifestError(resolver.problems)
    return series
