"""A sample delivery made to describe one real repository (ka-bot deliver in local mode)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bot.local import describe
from tests.support import PROJECT

SAMPLES = PROJECT / "tests/samples/forgejo/payloads"


def _repo(tmp_path: Path, branch: str) -> tuple[Path, str]:
    repo = tmp_path / "fleet"
    subprocess.run(["git", "init", "-q", "-b", branch, str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q",
                    "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    return repo, head


def _strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_a_comment_describes_the_repository_and_links_nowhere(tmp_path: Path) -> None:
    repo, _ = _repo(tmp_path, "trunk")
    sample = json.loads((SAMPLES / "issue_comment-created-issue-gitea-1.16.json").read_text())["payload"]
    assert sample["repository"]["default_branch"] == "master"
    got = describe(sample, "local/fleet", str(repo))
    assert got["repository"]["default_branch"] == "trunk" and got["repository"]["full_name"] == "local/fleet"
    assert got["repository"]["clone_url"] == str(repo) and got["repository"]["owner"]["login"] == "local"
    assert not [s for s in _strings(got) if "localhost:3000" in s]
    assert got["comment"]["body"] == sample["comment"]["body"]  # the rest stays


def test_a_push_is_of_the_default_branch_head_unless_a_commit_is_named(tmp_path: Path) -> None:
    repo, head = _repo(tmp_path, "trunk")
    sample = json.loads(json.loads((SAMPLES / "push-forgejo-12.json").read_text())["raw_body"])
    got = describe(json.loads(json.dumps(sample)), "local/fleet", str(repo))
    assert (got["after"], got["ref"], got["commits"], got["head_commit"]) == (head, "refs/heads/trunk", [], None)
    named = describe(sample, "local/fleet", str(repo), "a" * 40, "refs/heads/topic")
    assert (named["after"], named["ref"]) == ("a" * 40, "refs/heads/topic")
