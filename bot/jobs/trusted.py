"""What the bot trusts: the fleet's settings at the default branch's head, never at the commit it checks.

A commit under test can come from anyone's pull request.  Whatever decides where the bot connects
(parity reference folders, build hosts, the repository, operators) is read from
``fleet/infra.yaml`` on the default branch, as the forge says it is now; and a build counts as
the default branch's only when its commit is on that branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot import mirror
from bot.services import Services
from ka.fleet.infra import Infra, load_infra
from ka.fleet.repo import GitTree
from ka.io.runner import run
from ka.limits import Limits
from ka.promote import canonical


@dataclass(frozen=True)
class Head:
    """The default branch now: its name, its head commit, its ``infra.yaml``, and the mirror holding it."""

    branch: str
    sha: str
    infra: Infra
    mirror: Path

    def holds(self, sha: str) -> bool:
        """True when ``sha`` is the head or one of its ancestors: on the default branch."""
        return run(["git", "-C", self.mirror, "merge-base", "--is-ancestor", sha, self.sha], check=False).ok


def named_references(head: Head, limits: Limits) -> set[tuple[str, str]]:
    """The ``parity.canonical: HOST:PATH`` references the default branch's manifests name."""
    return canonical.named_references(GitTree(head.mirror, head.sha, limits))


def default_head(services: Services, clone_url: str | None) -> Head:
    """Ask the forge for the default branch, fetch its head, read its ``fleet/infra.yaml``."""
    config = services.config
    branch, sha = services.forge.default_branch()
    path = mirror.fetch_commit(config, clone_url, f"refs/heads/{branch}", sha)
    return Head(branch, sha, load_infra(GitTree(path, sha, config.limits)), path)
