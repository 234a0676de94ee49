"""kernel-agent's exceptions.

Each carries a message meant for the user and the exit code the CLI returns
for it; :func:`ka.cli.main.main` is the one place that turns them into output.
"""

from __future__ import annotations

from ka.text import cap, did_you_mean, encodable

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERRUPTED = 130  # SIGINT or SIGTERM: stopped where it was safe, with the way back


class KaError(Exception):
    """Base of every error kernel-agent reports to its user; ``exit_code`` overrides the class's."""

    exit_code = EXIT_ENVIRONMENT

    def __init__(self, *args: object, exit_code: int | None = None) -> None:
        super().__init__(*args)
        if exit_code is not None:
            self.exit_code = exit_code


class BadInput(KaError):
    """The user's input (arguments, manifest, patch tree) is wrong; nothing was changed."""

    exit_code = EXIT_BAD_INPUT


class UnknownHost(BadInput):
    """A host name that has no manifest."""

    def __init__(self, host: str, known: list[str]) -> None:
        hint = (", ".join(known) if known else "none: fleet/ holds no manifests") + did_you_mean(host, known)
        super().__init__(f"unknown host '{host}' (no fleet/{host}.yaml); known hosts: {hint}")
        self.host = host


class Problem:
    """One validation finding, located in a file (and line, when known)."""

    __slots__ = ("field", "file", "line", "message")

    def __init__(self, file: str, line: int | None, field: str, message: str) -> None:
        self.file = file
        self.line = line
        self.field = encodable(cap(field, 100))  # the callers cap what they echo; this is the backstop
        self.message = encodable(cap(message, 600))

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"

    def as_dict(self) -> dict[str, object]:
        """The finding as JSON-ready data."""
        return {"file": self.file, "line": self.line, "field": self.field,
                "message": self.message}


class ManifestError(BadInput):
    """A manifest, or the patch tree it names, is invalid."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ToolMissing(KaError):
    """A program kernel-agent needs is not installed."""

    def __init__(self, program: str) -> None:
        super().__init__(
            f"'{program}' is not installed or not on PATH; install it "
            f"(Debian: apt-get install {program}) and try again"
        )


class KernelTreeError(BadInput):
    """The kernel tree is missing, not a git repository, or lacks the baseline."""


class ReferenceRefused(BadInput):
    """``parity.canonical`` names a file outside every folder of ``parity_references``: nothing is read."""


class ReferenceUnavailable(KaError):
    """A parity reference on a host could not be read; the message is for the operator, ``public`` for others
    (no host, path or error: a missing file must look like an unreadable one)."""

    exit_code = EXIT_ENVIRONMENT
    public = "parity reference unavailable"
