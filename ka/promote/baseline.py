"""Check that a cumulative patch applies on the baseline, without a checkout.

The kernel tree is only read: a temporary index holds just the paths the
patch touches (taken from the baseline commit), and ``git apply --cached``
works against it.  Objects that attribution writes go to a temporary object
folder that borrows the kernel's objects as an alternate, so the kernel tree
is never changed.  Strict as ``git apply`` is: no fuzz.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from ka.errors import KernelTreeError
from ka.fleet.series import PatchFile, Series
from ka.io.runner import Completed, run

_FAILED = re.compile(r"^error: patch failed: (.+):(\d+)$", re.M)
_MISSING = re.compile(r"^error: (.+): does not exist in index$", re.M)
_EXISTS = re.compile(r"^error: (.+): already exists in index$", re.M)
_OFFSET = re.compile(r"^Hunk #(\d+) succeeded at (\d+) \(offset (-?\d+) lines?\)\.$", re.M)
_HUNK = re.compile(rb"^@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@", re.M)
_APPLY = ("apply", "--cached", "--whitespace=nowarn", "-v")

KINDS = {
    "context-mismatch": "context does not match the baseline",
    "already-applied": "already applied (it applies in reverse)",
    "missing-file": "patches a file that does not exist",
    "file-exists": "creates a file that already exists",
    "malformed": "not a patch git can read",
    "concatenation": "every patch applies alone but not the concatenation (a file without a final newline?)",
}


@dataclass(frozen=True)
class ApplyFailure:
    """The first patch that does not apply, and why."""

    patch: str
    series: str
    kind: str
    file: str | None = None
    line: int | None = None
    hunk: int | None = None
    git: str = ""

    @property
    def detail(self) -> str:
        where = ""
        if self.file:
            where = f" in {self.file}"
            if self.hunk:
                where += f" hunk #{self.hunk}"
            if self.line:
                where += f" (baseline line {self.line})"
        return f"{KINDS[self.kind]}{where}"

    def as_dict(self) -> dict[str, object]:
        """JSON shape: ``{patch, detail}`` plus the located facts."""
        return {"patch": self.patch, "detail": self.detail, "series": self.series,
                "kind": self.kind, "file": self.file, "line": self.line,
                "hunk": self.hunk, "git": self.git}


@dataclass(frozen=True)
class ApplyResult:
    """Outcome of the baseline check."""

    applies: bool
    commit: str
    failure: ApplyFailure | None = None
    offsets: list[str] = field(default_factory=list)


def _unquote(path: str) -> str:
    if path.startswith('"') and path.endswith('"'):
        return path[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape").encode(
            "latin-1").decode("utf-8", "replace")
    return path


def _strip_prefix(path: str) -> str | None:
    path = _unquote(path.split("\t", 1)[0].strip())
    if path == "/dev/null":
        return None
    return path.split("/", 1)[1] if "/" in path else path


# A header line is searched for with its newline in front, not with ^ under re.M: a pattern that begins
# with a literal character is searched for that character alone, four times faster over a 3.6 MB patch
# than testing every position for ^.  The first line, which has no newline in front, is matched apart
# (the patch is never copied: a 16 MiB patch stays one buffer).
_HEADER = rb"((?:--- |\+\+\+ |rename from |rename to |copy from |copy to |diff --git a/)[^\n]*)"
_CREATE = rb"--- /dev/null\r?\n\+\+\+ ([^\n]*)"
_HEADERS = (re.compile(_HEADER), re.compile(rb"\n" + _HEADER))
_CREATES = (re.compile(_CREATE), re.compile(rb"\n" + _CREATE))


def _line_matches(patch: bytes, patterns: tuple[re.Pattern[bytes], re.Pattern[bytes]]) -> Iterator[re.Match[bytes]]:
    """Every line of ``patch`` that ``patterns`` (for the first line, for the others) match."""
    first, rest = patterns
    if m := first.match(patch):
        yield m
    yield from rest.finditer(patch)


def touched_paths(patch: bytes) -> list[str]:
    """Every path a patch reads or writes (``-p1``), sorted; may list a few extra.

    Only header lines are looked at (a regular expression over the bytes, not a list of every
    line), so a large patch costs no second copy of itself.
    """
    found: set[str] = set()
    for m in _line_matches(patch, _HEADERS):
        line = m.group(1).rstrip(b"\r").decode("utf-8", "surrogateescape")
        if line.startswith(("--- ", "+++ ")):
            path = _strip_prefix(line[4:])
        elif line.startswith(("rename from ", "rename to ", "copy from ", "copy to ")):
            path = _unquote(line.split(" ", 2)[2])
        elif line.startswith("diff --git a/"):
            halves = line[len("diff --git "):].split(" b/", 1)
            path = _strip_prefix(halves[0]) if len(halves) == 2 else None
        else:
            continue
        if path:
            found.add(path)
    return sorted(found)


class KernelTree:
    """A kernel git tree that baselines are read from (never written)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_dir():
            raise KernelTreeError(f"kernel tree {path}: no such folder (give --kernel-tree or KA_KERNEL_TREE; "
                                  "'ka baseline import' makes one from a source tarball)")
        res = run(["git", "-C", path, "rev-parse", "--git-path", "objects"], check=False)
        if not res.ok:
            raise KernelTreeError(f"kernel tree {path}: not a git repository")
        objects = Path(res.text().strip())
        self.objects = objects if objects.is_absolute() else (path / objects).resolve()

    def commit(self, ref: str, where: str) -> str:
        """The commit ``ref`` names; ``where`` says which manifest field asked."""
        res = run(["git", "-C", self.path, "rev-parse", "--verify", "--quiet", "--end-of-options",
                   f"{ref}^{{commit}}"], check=False)
        if not res.ok:
            raise KernelTreeError(f"{where}: '{ref}' is not a tag or commit in the kernel tree "
                                  f"(fetch it there, or import the matching source with 'ka baseline import')")
        return res.text().strip()


class _Scratch:
    """A temporary index and object folder layered over the kernel tree."""

    def __init__(self, kernel: KernelTree, folder: Path) -> None:
        (folder / "objects").mkdir()
        self.kernel = kernel
        self.env = {
            "GIT_INDEX_FILE": str(folder / "index"),
            "GIT_OBJECT_DIRECTORY": str(folder / "objects"),
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(kernel.objects),
        }

    def git(self, *args: str, data: bytes | None = None) -> Completed:
        return run(["git", "-C", self.kernel.path, "--literal-pathspecs", *args],
                   env=self.env, input=data, check=False)

    def load(self, commit: str, paths: list[str]) -> None:
        listing = self.git("ls-tree", "-r", "-z", "--full-tree", commit, "--", *paths) if paths else None
        entries = listing.stdout if listing is not None and listing.ok else b""
        res = self.git("update-index", "-z", "--index-info", data=entries)
        if not res.ok:
            raise KernelTreeError(f"kernel tree {self.kernel.path}: cannot build a scratch index: {res.err()}")


def check_applies(kernel: KernelTree, commit: str, series: list[Series], cumulative: bytes) -> ApplyResult:
    """Check the cumulative patch on ``commit``; on failure name the first patch that fails."""
    with tempfile.TemporaryDirectory(prefix="ka-apply-") as tmp:
        scratch = _Scratch(kernel, Path(tmp))
        scratch.load(commit, touched_paths(cumulative))
        whole = scratch.git(*_APPLY, "--check", data=cumulative)
        if whole.ok and not _creates_twice(series):
            return ApplyResult(True, commit, offsets=_offsets(whole))
        failure = _attribute(scratch, series)
    return ApplyResult(False, commit, failure=failure)


def patched_tree(kernel: KernelTree, commit: str, cumulative: bytes, dest: Path,
                 keep: Callable[[str], bool]) -> int:
    """Write the files of ``commit`` with ``cumulative`` applied for which ``keep(path)`` holds into ``dest``
    (the kernel tree is only read); the number of files written."""
    with tempfile.TemporaryDirectory(prefix="ka-patched-") as tmp:
        scratch = _Scratch(kernel, Path(tmp))
        res = scratch.git("read-tree", commit)
        if res.ok:
            res = scratch.git(*_APPLY, data=cumulative)
        if not res.ok:
            raise KernelTreeError(f"kernel tree {kernel.path}: the cumulative patch on {commit[:12]}: "
                                  f"{res.err().strip()[-300:]}")
        names = [n for n in scratch.git("ls-files", "-z").stdout.split(b"\0") if n and keep(n.decode(errors="replace"))]
        res = run(["git", "-C", kernel.path, "--work-tree", dest, "checkout-index", "-z", "--stdin"],
                  env=scratch.env, input=b"\0".join(names) + b"\0", check=False)
        if not res.ok:
            raise KernelTreeError(f"kernel tree {kernel.path}: cannot write the patched files: {res.err().strip()}")
        return len(names)


def _creates_twice(series: list[Series]) -> bool:
    """True when two patch files create the same path.

    ``git apply`` accepts that inside one input (the second creation simply
    wins), while applying the patches one by one, as ``patch`` in a PKGBUILD
    does, fails; so such a cumulative patch goes to the patch-by-patch check.
    """
    created: set[str] = set()
    for s in series:
        for patch in s.patches:
            new = _created_paths(patch.data)
            if new & created:
                return True
            created |= new
    return False


def _created_paths(patch: bytes) -> set[str]:
    found = set()
    for m in _line_matches(patch, _CREATES):
        path = _strip_prefix(m.group(1).rstrip(b"\r").decode("utf-8", "surrogateescape"))
        if path:
            found.add(path)
    return found


def _offsets(res: Completed) -> list[str]:
    return [m.group(0) for m in _OFFSET.finditer(res.err())]


def _attribute(scratch: _Scratch, series: list[Series]) -> ApplyFailure:
    """Apply patch by patch in the scratch index; classify the first that fails."""
    last: tuple[Series, PatchFile] | None = None
    for s in series:
        for patch in s.patches:
            last = (s, patch)
            res = scratch.git(*_APPLY, data=patch.data)
            if not res.ok:
                return _classify(scratch, s, patch, res)
    assert last is not None
    return ApplyFailure(patch=last[1].path, series=last[0].include.text, kind="concatenation")


def _classify(scratch: _Scratch, s: Series, patch: PatchFile, res: Completed) -> ApplyFailure:
    err = res.err()
    git_lines = "\n".join(ln for ln in err.splitlines() if ln.startswith(("error:", "fatal:")))
    failure = partial(ApplyFailure, patch=patch.path, series=s.include.text, git=git_lines)
    reverse = scratch.git(*_APPLY, "--check", "-R", data=patch.data).ok
    if m := _FAILED.search(err):
        path, line = m.group(1), int(m.group(2))
        kind = "already-applied" if reverse else "context-mismatch"
        return failure(kind=kind, file=path, line=line, hunk=hunk_number(patch.data, path, line))
    if m := _MISSING.search(err):
        return failure(kind="missing-file", file=m.group(1))
    if m := _EXISTS.search(err):
        return failure(kind="already-applied" if reverse else "file-exists", file=m.group(1))
    return failure(kind="malformed")


def hunk_number(patch: bytes, path: str, line: int) -> int | None:
    """1-based number of the hunk of ``path`` in ``patch`` that starts at baseline ``line``."""
    section = _file_section(patch, path)
    if section is None:
        return None
    for number, m in enumerate(_HUNK.finditer(section), start=1):
        if int(m.group(1)) == line:
            return number
    return None


def _file_section(patch: bytes, path: str) -> bytes | None:
    marker = f"+++ b/{path}".encode()
    start = patch.find(marker)
    if start < 0:
        return None
    end = patch.find(b"\ndiff --git ", start)
    return patch[start:] if end < 0 else patch[start:end]
