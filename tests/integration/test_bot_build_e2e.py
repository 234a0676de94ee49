"""/ka build through the fake Forgejo: a real bot, real sshd build hosts, makepkg, gpg and repo-add."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import requests

from tests.support.botkit import Rig, commit_and_push, wait_for
from tests.support.buildlab import BuildLab
from tests.support.kernel import git
from tests.support.threads import PR, open_pr, replies, say, wait_replies

ISSUE = 3


def test_ka_build_of_the_default_branch_builds_signs_publishes_and_answers(rig: Callable[..., Rig],
                                                                           build_lab: BuildLab) -> None:
    hosts, files = build_lab.parts("bot-build")
    r = rig(hosts, files, **build_lab.bot_env())
    r.fake.permissions["writer"] = "write"
    sha = r.head()
    answer = say(r, "/ka build ampere", number=ISSUE, pull=False)  # an issue: the default branch's head
    ack = wait_replies(r, 1, number=ISSUE)[0]
    assert "`/ka build ampere`: job [" in ack and f"(build of ampere on `{sha[:12]}`)" in ack
    job = int(ack.split("job [")[1].split("]")[0])
    record = r.bot.wait_job(job, timeout=180)
    assert record["state"] == "succeeded", record
    result = wait_replies(r, 2, number=ISSUE)[1]
    assert f"`/ka build ampere` asked by @writer on `{sha[:12]}`: **succeeded**" in result
    assert "Built on `boltzmann`; published to `hertz` `fleet.db.tar.zst`" in result
    assert "- `config audit: all 3 requested options hold in the final .config`" in result
    assert "| `linux-ampere-6.12.0-1-aarch64.pkg.tar.zst` |" in result
    assert f"`{build_lab.fingerprint}`" in result and "ka-build ampere --rev " + sha in result
    status = r.fake.latest(sha)["ka/build/ampere"]
    assert status["state"] == "success" and "linux-ampere 6.12.0-1 built on boltzmann" in status["description"]
    assert [s["state"] for s in r.fake.statuses(sha) if s["context"] == "ka/build/ampere"] == ["pending", "success"]
    live = requests.get(f"{r.bot.url}/jobs/{job}/live?offset=0", timeout=10).json()
    assert "==> Finished making: linux-ampere 6.12.0-1" in live["log"] and "== makepkg" in live["log"]
    wait_for(lambda: r.fake.reactions(answer["comment_id"]) == ["eyes", "rocket"], 30, "eyes, then rocket")


def test_ka_build_on_a_pull_request_builds_on_its_own_host_unsigned(rig: Callable[..., Rig],
                                                                    build_lab: BuildLab) -> None:
    hosts, files = build_lab.parts("bot-build-pr")
    r = rig(hosts, files, **build_lab.bot_env())
    r.fake.permissions["writer"] = "write"
    sha = open_pr(r)
    say(r, "/ka build ampere")
    result = wait_replies(r, 2)[1]
    assert f"`/ka build ampere` asked by @writer on `{sha[:12]}`: **succeeded**" in result
    assert "Built on `planck`; neither signed nor published: a pull request's commit" in result
    assert "| `linux-ampere-6.12.0-1-aarch64.pkg.tar.zst` |" in result and "| `unsigned` |" in result
    status = r.fake.latest(sha)["ka/build/ampere"]
    assert status["state"] == "success" and "built on planck, not published" in status["description"]


def test_a_failed_build_is_answered_with_the_reason_and_the_kept_folder(rig: Callable[..., Rig],
                                                                         build_lab: BuildLab) -> None:
    hosts, files = build_lab.parts("bot-broken", files={"patches/module/oops.patch":
                                                        build_lab.kernel.patches["broken-build"]},
                                   includes=("soc/base", "module/oops"))
    r = rig(hosts, files, **build_lab.bot_env())
    r.fake.permissions["writer"] = "write"
    sha = open_pr(r)
    say(r, "/ka build ampere")
    result = wait_replies(r, 2, what="the acknowledgement and the result")[1]
    assert "**failed**" in result and "makepkg failed on planck" in result
    assert "The build folder is kept for inspection at `planck:" in result
    assert "goodix.c: error: #error" in result  # the log's last lines
    assert r.fake.latest(sha)["ka/build/ampere"]["state"] == "failure"


def test_a_pull_request_cannot_choose_the_build_hosts(rig: Callable[..., Rig], build_lab: BuildLab) -> None:
    """infra.yaml comes from the default branch: a fork's own infra.yaml is not used."""
    hosts, files = build_lab.parts("bot-infra")
    r = rig(hosts, files, **build_lab.bot_env())
    r.fake.permissions["writer"] = "write"
    git(r.work, "checkout", "-q", "-B", f"topic{PR}")
    (r.work / "fleet/infra.yaml").write_text("build_hosts:\n  - ssh: attacker.example\n    workdir: /tmp\n")
    sha = commit_and_push(r.work, r.bare, "send the build elsewhere", ref=f"topic{PR}")
    git(r.bare, "update-ref", f"refs/pull/{PR}/head", sha)
    r.fake.pulls[PR] = {"number": PR, "state": "open", "base": {"repo": {"full_name": "fleet/kernel-agent"}},
                        "head": {"sha": sha, "repo": {"full_name": "someone/fork"}}}
    say(r, "/ka build ampere")
    ack, result = wait_replies(r, 2)
    assert "fork `someone/fork`" in ack
    assert "**succeeded**" in result and "Built on `planck`" in result and "attacker" not in result
    assert len(replies(r)) == 2


def test_a_parity_reference_on_a_host_is_read_once_until_it_changes(rig: Callable[..., Rig], build_lab: BuildLab,
                                                                      tmp_path: Path) -> None:
    local = build_lab.fleet(tmp_path / "local", "bot-canonical")
    assert build_lab.ka("promote", "ampere", "--repo", str(local)).returncode == 0
    folder = build_lab.ssh.user_folder("bot-canonical", "src")
    remote = folder / "cumulative.patch"
    remote.write_bytes((local / "out/ampere/ampere-cumulative.patch").read_bytes())
    hosts, files = build_lab.parts("bot-canonical", infra=build_lab.infra("bot-canonical", references=str(folder)))
    hosts["ampere"] += f"parity:\n  canonical: boltzmann:{remote}\n"
    r = rig(hosts, files, **build_lab.bot_env())

    def push(message: str) -> tuple[str, str]:
        sha = commit_and_push(r.work, r.bare, message)
        job = r.push(sha).json()["jobs"][0]
        r.bot.wait_job(job)
        return r.final(sha, ["ampere"])["ka/parity/ampere"]["description"], \
            requests.get(f"{r.bot.url}/jobs/{job}/live?offset=0", timeout=10).json()["log"]

    description, log = push("first")
    assert "parity match" in description and f"canonical boltzmann:{remote}: read" in log
    description, log = push("second")
    assert "parity match" in description and "from the cache" in log
    remote.write_bytes(remote.read_bytes() + b"\n")
    description, log = push("third")
    assert "parity mismatch" in description and f"canonical boltzmann:{remote}: read" in log


def test_ka_build_of_two_hosts_builds_both_at_once_and_answers_with_a_row_each(rig: Callable[..., Rig],
                                                                                build_lab: BuildLab) -> None:
    """Both build at once (one on each build host); the broken one fails alone, and the job is failed with
    the count: the reply has a row a host, each host its own status."""
    hosts, files = build_lab.parts("bot-many")
    broken = hosts["ampere"].replace("  - board/pinetab2\n", "  - board/missing\n")
    r = rig({**hosts, "volta": hosts["ampere"], "tesla": broken}, files, **build_lab.bot_env())
    r.fake.permissions["writer"] = "write"
    sha = r.head()
    say(r, "/ka build ampere volta tesla", number=ISSUE, pull=False)
    ack = wait_replies(r, 1, number=ISSUE)[0]
    assert f"(build of ampere, volta, tesla on `{sha[:12]}`)" in ack
    job = int(ack.split("job [")[1].split("]")[0])
    record = r.bot.wait_job(job, timeout=300)
    errors = {h: row["description"] for h, row in r.bot.hosts(job).items()}
    assert record["state"] == "failed" and record["error"] == "1 of 3 hosts failed", errors
    result = wait_replies(r, 2, number=ISSUE)[1]
    assert f"`/ka build ampere volta tesla` asked by @writer on `{sha[:12]}`: **failed**" in result
    assert "why: `1 of 3 hosts failed`" in result and "| host | state | built on | version | why not |" in result
    rows = {line.split("|")[1].strip(" `"): line for line in result.splitlines() if line.startswith("| `")}
    assert "| `success` |" in rows["ampere"] and "| `6.12.0-1` |" in rows["ampere"]
    assert "| `success` |" in rows["volta"] and "board/missing" in rows["tesla"]
    assert {rows["ampere"].split("|")[3].strip(" `"), rows["volta"].split("|")[3].strip(" `")} == {"boltzmann",
                                                                                                    "fermi"}
    latest = r.fake.latest(sha)
    assert latest["ka/build/ampere"]["state"] == latest["ka/build/volta"]["state"] == "success"
    assert latest["ka/build/tesla"]["state"] == "failure"
    assert "ka-build ampere volta tesla --rev " + sha in result
    log = requests.get(f"{r.bot.url}/jobs/{job}/live?offset=0", timeout=10).json()["log"]
    assert log.count("ampere: == makepkg") == 1 and "ampere: ==> Finished making: linux-ampere" in log  # a phase once
