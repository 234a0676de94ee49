"""Writing a verb's output files: all of them land, or none does, and a failure is a clear error.

Each file is first written to a temporary name beside its target (0644 whatever the umask);
only when every one is written are they renamed into place.  A full disk, a read-only or
missing folder leaves no temporary file and no half of the outputs behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import Path

from ka.errors import EXIT_BAD_INPUT, EXIT_ENVIRONMENT, KaError

#: errors that say the path is wrong (exit 2); anything else is the machine's state (exit 3)
_BAD_PATH = {errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR,
             errno.ENAMETOOLONG, errno.ELOOP}
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


class OutputError(KaError):
    """An output could not be written; nothing was left behind."""

    def __init__(self, path: Path, exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        hint = "; free some space and run again" if exc.errno in _NO_SPACE else ""
        super().__init__(f"cannot write {path}: {reason}{hint}")
        self.exit_code = EXIT_BAD_INPUT if exc.errno in _BAD_PATH else EXIT_ENVIRONMENT


class Outputs:
    """Files to write together: :meth:`add` them, then :meth:`commit`."""

    def __init__(self) -> None:
        self.files: list[tuple[Path, bytes]] = []

    def add(self, path: Path, data: bytes) -> None:
        """Queue ``data`` for ``path``."""
        self.files.append((path, data))

    def commit(self) -> None:
        """Write every file, or raise :class:`OutputError` and leave nothing behind."""
        made: list[Path] = []
        staged: list[tuple[Path, Path]] = []
        current = Path()
        try:
            for path, data in self.files:
                current = path
                made += _make_folder(path.parent)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
                _write(tmp, data)
                staged.append((tmp, path))
            for tmp, path in staged:
                current = path
                os.replace(tmp, path)
        except OSError as exc:
            _discard(staged, made)
            raise OutputError(current, exc) from None
        except BaseException:
            _discard(staged, made)
            raise


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones created here, deepest last.  A folder that
    another writer made meanwhile (many hosts' builds at once share ``out/``) is theirs: used, not returned."""
    made = []
    for p in [p for p in (folder, *folder.parents) if not p.exists()][::-1]:
        try:
            p.mkdir()
        except FileExistsError:
            if not p.is_dir():
                raise
            continue
        made.append(p)
    return made


def _write(tmp: Path, data: bytes) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)  # the same mode whatever the umask
            fh.write(data)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _discard(staged: list[tuple[Path, Path]], made: list[Path]) -> None:
    for tmp, _ in staged:
        with contextlib.suppress(OSError):
            tmp.unlink()
    for folder in reversed(made):
        with contextlib.suppress(OSError):  # not empty: something else lives there now
            folder.rmdir()
