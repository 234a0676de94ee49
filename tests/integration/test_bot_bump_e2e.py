"""/ka bump through the fake Forgejo: a real bot pushes a branch with the moved manifests and opens a
pull request whose description is the per-host table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support.botkit import Rig
from tests.support.fleet import fleet_files, manifest
from tests.support.kernel import BASE_TAG, GOODIX, NEXT_TAG, SmallKernel, git, point_release
from tests.support.threads import say, wait_replies

ISSUE = 14


def test_bump_opens_a_pull_request_with_the_hosts_that_move(rig: Callable[..., Rig], small_kernel: SmallKernel,
                                                             tmp_path: Path) -> None:
    tree = point_release(small_kernel, tmp_path / "point")
    hosts = {"ampere": manifest(["soc/base", "board/pinetab2"]), "fresnel": manifest(["board/pinetab2"])}
    r = rig(hosts, {**fleet_files(small_kernel), "fleet/infra.yaml": "operators:\n  fresnel: [alice]\n"},
            KA_KERNEL_TREE=str(tree))
    r.fake.permissions.update({"writer": "write", "alice": "write", "boss": "admin"})
    say(r, f"/ka bump {NEXT_TAG}", who="alice", number=ISSUE, pull=False)
    refusal = wait_replies(r, 1, number=ISSUE)[0]
    assert f"`/ka bump {NEXT_TAG}`: needs admin or owner, or an operator of the host" in refusal

    say(r, f"/ka bump {NEXT_TAG}", who="boss", number=ISSUE, pull=False)
    ack = wait_replies(r, 2, number=ISSUE)[1]
    assert "a pull request against `main` moving them to `v6.12.1`" in ack
    job = int(ack.split("job [")[1].split("]")[0])
    record = r.bot.wait_job(job, timeout=120)
    assert record["state"] == "succeeded", record
    (pr,) = r.fake.opened
    branch = f"ka/bump-{NEXT_TAG}-job{job}"
    assert (pr["head"]["ref"], pr["base"]["ref"], pr["title"]) == (branch, "main", f"Move hosts to {NEXT_TAG}")
    assert "1 of 2 hosts move to `v6.12.1`" in pr["body"]
    assert f"| `fresnel` | `{BASE_TAG}` | moves |" in pr["body"]
    assert (f"| `ampere` | `{BASE_TAG}` | **stays**: `patches/soc/base/10-goodix.patch` `context does not match the "
            f"baseline in {GOODIX} hunk #1 (baseline line 27)` |") in pr["body"], pr["body"]
    # the branch is on the forge's repository, one commit on main's head, fresnel's manifest moved
    assert git(r.bare, "rev-parse", f"{branch}^") == git(r.bare, "rev-parse", "main")
    assert f"ref: {NEXT_TAG}" in git(r.bare, "show", f"{branch}:fleet/fresnel.yaml").decode()
    assert f"ref: {BASE_TAG}" in git(r.bare, "show", f"{branch}:fleet/ampere.yaml").decode()
    result = wait_replies(r, 3, number=ISSUE)[2]
    assert f"`/ka bump {NEXT_TAG}` asked by @boss" in result and "**succeeded**" in result
    assert f"1 of 2 hosts move to `v6.12.1`: pull request {pr['html_url']}" in result
    assert "ka baseline bump --to v6.12.1 --all" in result
