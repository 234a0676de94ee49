"""Settings the CLI resolves once and passes down: arguments over environment over defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ka.errors import BadInput
from ka.fleet.repo import find_repo, git_toplevel
from ka.limits import Limits


@dataclass(frozen=True)
class Settings:
    """Where the repository, the kernel tree and the outputs are."""

    repo: Path
    kernel_tree: Path | None
    out_dir: Path
    limits: Limits = field(default_factory=Limits)


def resolve(repo: str | None, kernel_tree: str | None, out_dir: str | None, rev: str | None,
            cwd: Path, environ: Mapping[str, str]) -> Settings:
    """Find the kernel-agent repository and the kernel tree.

    With ``rev`` the repository only has to be a git repository (a bare
    mirror will do), since fleet/ and patches/ come from the commit.
    """
    if rev is not None:
        base = Path(repo) if repo else cwd
        top = git_toplevel(base)
        if top is None:
            raise BadInput(f"{base}: --rev needs a git repository (give --repo DIR)")
        root = top
    else:
        root = find_repo(Path(repo) if repo else cwd)
        if repo and root.resolve() != Path(repo).resolve():
            raise BadInput(f"--repo {repo}: no fleet/ and patches/ there")
    tree = kernel_tree or environ.get("KA_KERNEL_TREE") or None
    out = Path(out_dir) if out_dir else root / "out"
    return Settings(repo=root, kernel_tree=Path(tree) if tree else None,
                    out_dir=out if out.is_absolute() else root / out, limits=Limits.from_env(environ))
