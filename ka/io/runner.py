"""The one place kernel-agent starts other programs.

Every git, ssh or packaging call goes through :func:`run`.  It takes the
working directory and extra environment as arguments and never touches the
process's own directory or environment, so concurrent jobs cannot disturb
each other (the b4 lesson).  It logs the argv, exit code and duration.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ka.errors import EXIT_ENVIRONMENT, KaError, ToolMissing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completed:
    """What a finished command returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def text(self) -> str:
        """Standard output decoded as UTF-8 (invalid bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")

    def err(self) -> str:
        """Standard error decoded as UTF-8 (invalid bytes replaced)."""
        return self.stderr.decode("utf-8", "replace")


class CommandFailed(KaError):
    """A command exited non-zero where success was required."""

    exit_code = EXIT_ENVIRONMENT

    def __init__(self, result: Completed) -> None:
        self.result = result
        tail = result.err().strip().splitlines()[-5:]
        super().__init__(
            f"{result.argv[0]} exited {result.returncode}: " + " | ".join(tail)
        )


class CommandTimedOut(KaError):
    """A command ran past the time it was given (and was killed)."""

    exit_code = EXIT_ENVIRONMENT

    def __init__(self, program: str, seconds: float) -> None:
        super().__init__(f"{program} took over {seconds:g}s and was stopped")
        self.seconds = seconds


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> Completed:
    """Run ``argv`` (never through a shell) and capture its output.

    ``env`` holds variables added to (or overriding) the inherited
    environment for this child only.  With ``check`` a non-zero exit raises
    :class:`CommandFailed`; past ``timeout`` seconds the child is killed and
    :class:`CommandTimedOut` raised.
    """
    args = tuple(os.fspath(a) for a in argv)
    child_env = None if env is None else {**os.environ, **env}
    start = time.monotonic()
    try:
        proc = subprocess.run(
            args,
            cwd=None if cwd is None else Path(cwd),
            env=child_env,
            input=input,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ToolMissing(args[0]) from exc
    except subprocess.TimeoutExpired:
        raise CommandTimedOut(args[0], timeout or 0) from None
    result = Completed(args, proc.returncode, proc.stdout, proc.stderr,
                       time.monotonic() - start)
    log.debug("ran %s -> %d in %.3fs", " ".join(args[:6]), result.returncode,
              result.seconds)
    if check and not result.ok:
        raise CommandFailed(result)
    return result


class Feeder:
    """A child that reads a long stream on stdin (``git fast-import``); started through :func:`feed`."""

    def __init__(self, argv: tuple[str, ...], cwd: str | os.PathLike[str] | None) -> None:
        self.argv = argv
        self.start = time.monotonic()
        try:
            self.proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE)
        except FileNotFoundError as exc:
            raise ToolMissing(argv[0]) from exc
        assert self.proc.stdin is not None
        self.stdin = self.proc.stdin

    def finish(self) -> int:
        """Close stdin, wait, log and return the exit code."""
        self.stdin.close()
        code = self.proc.wait()
        log.debug("fed %s -> %d in %.3fs", " ".join(self.argv[:6]), code, time.monotonic() - self.start)
        return code

    def abort(self) -> None:
        """Kill the child after a failure on our side."""
        self.proc.kill()
        self.proc.wait()


@contextmanager
def reading(argv: Sequence[str | os.PathLike[str]]) -> Iterator[IO[bytes]]:
    """Start ``argv`` (never through a shell) and yield its standard output as a stream.

    For output too large to hold (a package decompressed); a non-zero exit raises
    :class:`CommandFailed` once the stream has been read.
    """
    args = tuple(os.fspath(a) for a in argv)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError as exc:
        raise ToolMissing(args[0]) from exc
    assert proc.stdout is not None and proc.stderr is not None
    try:
        yield proc.stdout
        proc.stdout.read()  # drain, so the child is not stopped by a full pipe
    except BaseException:  # the reader stopped early (an error, or a generator closed after what it wanted):
        proc.kill()  # the rest of the output is not wanted, and a child blocked on a full pipe never exits
        raise
    finally:
        err = proc.stderr.read()
        code = proc.wait()
    log.debug("read %s -> %d in %.3fs", " ".join(args[:6]), code, time.monotonic() - start)
    if code != 0:
        raise CommandFailed(Completed(args, code, b"", err, time.monotonic() - start))


def feed(argv: Sequence[str | os.PathLike[str]], *, cwd: str | os.PathLike[str] | None = None) -> Feeder:
    """Start ``argv`` (never through a shell) with a pipe to its stdin."""
    return Feeder(tuple(os.fspath(a) for a in argv), cwd)
