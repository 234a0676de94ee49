"""Comment commands end to end: a real bot, the fake Forgejo checked against the API spec, real git.

Every accepted command must end in a terminal reply on its thread; refused ones say why and
queue nothing; the pull request's summary stays one comment.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import requests
from markupsafe import escape

from bot.web.writes import comment_html
from tests.support import PROJECT
from tests.support.botkit import REPO, SECRET, BotProcess, Rig, commit_and_push, delivery, pr_payload, wait_for
from tests.support.fleet import AMPERE, manifest
from tests.support.kernel import git
from tests.support.threads import PR, comment_payload, open_pr, replies, say, slow_fleet, wait_replies


@pytest.fixture
def thread(rig: Callable[..., Rig]) -> Rig:
    r = rig({"ampere": AMPERE, "ohm": manifest(["soc/base"])})
    r.fake.permissions.update({"writer": "write", "reader": "read", "boss": "admin"})
    return r


def test_a_writers_promote_on_a_pull_request_is_acknowledged_then_answered(thread: Rig) -> None:
    sha = open_pr(thread)
    answer = say(thread, "Looks right to me.\n\n/ka promote ampere")
    assert answer["outcome"] == "queued"
    ack, result = wait_replies(thread, 2)
    assert "@writer on `" + sha[:12] + "` (head of #7)" in ack
    assert "`/ka promote ampere`: job [" in ack and "queued (parity of ampere on `" + sha[:12] in ack
    assert "`/ka promote ampere` asked by @writer on `" + sha[:12] + "`: **succeeded**" in result
    assert "| `ampere` | `success` | `" in result and "| `v6.12.0` | yes | `unset` |" in result
    assert "<details><summary>last lines of the log</summary>" in result
    assert "By hand: `ka-promote ampere --rev " + sha in result
    wait_for(lambda: thread.fake.reactions(answer["comment_id"]) == ["eyes", "rocket"], 30, "eyes, then rocket")
    job = int(ack.split("job [")[1].split("]")[0])
    record = thread.bot.job(job)
    assert record["state"] == "succeeded" and record["requester"]["command"] == "/ka promote ampere"
    assert [h["host"] for h in record["hosts"]] == ["ampere"]  # the command's hosts, not the fleet
    assert thread.fake.latest(sha)["ka/parity/ampere"]["state"] == "success"
    # the job page shows the reply as the forge renders it, and the statuses with their state and description
    page = requests.get(f"{thread.bot.url}/jobs/{job}", timeout=10).text
    assert str(comment_html(result)) in page and "<strong>succeeded</strong>" in page
    assert "<td><code>ampere</code></td>" in page and "<details><summary>last lines of the log</summary>" in page
    status = thread.fake.latest(sha)["ka/parity/ampere"]
    assert '<td class="success">success</td>' in page and f"<td>{escape(status['description'])}</td>" in page


def test_a_job_whose_hosts_fail_is_failed_everywhere_with_its_counts(rig: Callable[..., Rig]) -> None:
    """Green over red was a defect: every host in error, yet "succeeded" and a rocket."""
    r = rig({"ampere": AMPERE, "ohm": manifest(["soc/no-such-series"])})
    r.fake.permissions.update({"writer": "write"})
    sha = open_pr(r)
    answer = say(r, "/ka promote ampere ohm")
    ack, result = wait_replies(r, 2)
    assert "`/ka promote ampere ohm` asked by @writer on `" + sha[:12] + "`: **failed**" in result, result
    assert "1 of 2 hosts failed" in result and "| `ohm` | `error` |" in result and "| `ampere` | `success` |" in result
    wait_for(lambda: r.fake.reactions(answer["comment_id"]) == ["eyes", "confused"], 30, "eyes, then confused")
    job = int(ack.split("job [")[1].split("]")[0])
    record = r.bot.job(job)
    assert (record["state"], record["error"]) == ("failed", "1 of 2 hosts failed")
    page = requests.get(f"{r.bot.url}/jobs/{job}", timeout=10).text
    assert '<span id="state" class="state-failed">failed</span>' in page
    assert '<td id="error">1 of 2 hosts failed</td>' in page
    # the push's own check of the whole fleet: failed too, and its answer stands (a redelivery is a duplicate)
    first = r.push(sha).json()
    (fleet_job,) = first["jobs"]
    ended = r.bot.wait_job(fleet_job)
    assert (ended["state"], ended["error"]) == ("failed", "1 of 2 hosts failed")
    again = r.push(sha).json()
    assert (again["outcome"], again["jobs"]) == ("duplicate", [fleet_job]), again


def test_a_reader_is_refused_and_nothing_is_queued(thread: Rig) -> None:
    open_pr(thread)
    jobs_before = requests.get(thread.bot.url + "/jobs?format=json", timeout=10).json()["jobs"]
    answer = say(thread, "/ka build ampere\n/ka promote ohm", who="reader")
    (reply,) = wait_replies(thread, 1)
    assert "`/ka build ampere`: needs write access; @reader has **read**" in reply
    assert "`/ka promote ohm`: needs write access; @reader has **read**" in reply
    jobs = requests.get(thread.bot.url + "/jobs?format=json&verb=parity", timeout=10).json()["jobs"]
    assert [j for j in jobs if j["id"] not in {x["id"] for x in jobs_before}] == []
    assert thread.fake.reactions(answer["comment_id"]) == ["eyes"]


def test_help_unknown_verbs_and_unknown_hosts(thread: Rig) -> None:
    open_pr(thread)
    say(thread, "/ka help", who="stranger")  # help is for anyone, even without access
    (help_reply,) = wait_replies(thread, 1)
    assert "| `/ka build HOST…\\|all [@SHA]` | build the hosts' kernel packages, several at once on the build " \
           "hosts (ka-build); signed and published only" in help_reply
    say(thread, "/ka biuld ampere\n/ka promote nosuch")
    second = wait_replies(thread, 2)[1]
    assert "`/ka biuld ampere`: unknown command `biuld`; did you mean `build`?" in second
    assert "| command | does | who may run it |" in second  # an unknown verb gets the help too
    assert "`/ka promote nosuch`: not in the fleet at `" in second and "its hosts: `ampere`, `ohm`" in second


def test_install_needs_an_admin_and_a_failed_one_says_why(thread: Rig) -> None:
    open_pr(thread)
    say(thread, "/ka install ampere")
    (reply,) = wait_replies(thread, 1)
    assert "`/ka install ampere`: needs admin or owner, or an operator of the host" in reply
    say(thread, "/ka install ampere --no-reboot", who="boss")
    ack, result = wait_replies(thread, 3)[1:]
    assert "queued (install of ampere on `" in ack and "with the settings on `main`" in ack
    assert "**failed**" in result and "no repository to take the newest package from" in result
    assert "ka-install ampere --no-reboot --rev " in result


def test_an_operator_is_a_collaborator_or_has_write_access(rig: Callable[..., Rig]) -> None:
    """A login in operators: is an identity only while the repository knows it: a deleted account's name can be
    taken, and on a public repository every account has read."""
    r = rig({"ampere": AMPERE}, {"fleet/infra.yaml": "operators:\n  ampere: [ghost, passerby, reader]\n"})
    r.fake.permissions.update({"passerby": "read", "reader": "read"})  # ghost: no such user (404)
    r.fake.collaborators = {"reader"}  # passerby has read as anyone has on a public repository
    for n, who in enumerate(("ghost", "passerby"), start=1):
        say(r, "/ka install ampere --no-reboot", who=who, number=1, pull=False)
        refusal = wait_replies(r, n, number=1)[-1]
        assert "`/ka install ampere --no-reboot`: needs admin or owner, or an operator of the host" in refusal
        assert "an operator needs write access, or to be a collaborator of the repository" in refusal
    say(r, "/ka install ampere --no-reboot", who="reader", number=1, pull=False)
    ack = wait_replies(r, 3, number=1)[2]
    assert "queued (install of ampere on `" in ack, ack


def test_a_build_of_a_host_without_a_package_section_says_why(thread: Rig) -> None:
    sha = open_pr(thread)
    say(thread, "/ka build ampere")
    ack, result = wait_replies(thread, 2)
    assert "`/ka build ampere`: job [" in ack
    assert "**failed**" in result and "package: missing: ka-build needs a package section" in result
    assert thread.fake.latest(sha)["ka/build/ampere"]["state"] == "failure"


def test_edits_replays_and_the_bots_own_comments_do_nothing(thread: Rig) -> None:
    open_pr(thread)
    payload = comment_payload("/ka promote ampere", PR, "writer", True)
    d = delivery("issue_comment-created-pr-forgejo-15-synthesized", payload)
    assert thread.bot.send(d).json()["outcome"] == "queued"
    wait_replies(thread, 2)
    replay = delivery("issue_comment-created-pr-forgejo-15-synthesized", payload)  # Replay: a new delivery id
    assert thread.bot.send(replay).json()["outcome"] == "duplicate"
    edited = comment_payload("/ka promote ohm", PR, "writer", True, comment_id=payload["comment"]["id"],
                             action="edited")
    res = thread.bot.send(delivery("issue_comment-edited-issue-legacy", edited))
    assert res.json()["outcome"] == "ignored" and "commands act only in new comments" in res.json()["reason"]
    own = say(thread, "`/ka promote ampere` asked by @writer\n/ka promote ampere", who="ka-bot")
    assert own["outcome"] == "ignored"
    wait_for(lambda: requests.get(thread.bot.url + "/healthz", timeout=10).json()["outbox_backlog"] == 0, 30,
             "an empty outbox")
    assert len(replies(thread)) == 2


def test_with_its_own_login_unknown_the_bot_acts_on_no_comment(rig: Callable[..., Rig]) -> None:
    """Fail closed: a comment that may be the bot's own (its replies quote commands) never acts."""
    r = rig({"ampere": AMPERE}, start=False)
    r.fake.permissions["writer"] = "write"
    r.fake.user_refused = True  # a token without read:user, and no KA_BOT_LOGIN
    r.bot.start()
    open_pr(r)
    for who in ("ka-bot", "writer"):
        answer = say(r, "/ka promote ampere", who=who)
        assert answer["outcome"] == "queued"
        record = r.bot.wait_job(answer["jobs"][0])
        assert record["state"] == "succeeded", record
        assert "the bot's own login is unknown" in record["result"]["ignored"], record["result"]
        assert "KA_BOT_LOGIN" in record["result"]["ignored"]
    wait_for(lambda: requests.get(r.bot.url + "/healthz", timeout=10).json()["outbox_backlog"] == 0, 30,
             "an empty outbox")
    assert replies(r) == []
    assert requests.get(r.bot.url + "/jobs?format=json&verb=parity", timeout=10).json()["jobs"] == []
    assert "KA_BOT_LOGIN" in r.bot.log()


def test_status_on_an_issue_and_a_fork_note_on_a_pull_request(thread: Rig) -> None:
    sha = thread.head()
    thread.bot.wait_job(thread.push(sha).json()["jobs"][0])
    say(thread, "/ka status", number=1, pull=False)
    (status,) = wait_replies(thread, 1, number=1)
    assert status.startswith("@writer:\n\n- `/ka status`:")
    assert f"Fleet on `main` (`{sha[:12]}`, [job" in status
    assert "| [`ampere`](" in status and "| `success` | `" in status
    open_pr(thread, 8, fork="someone/kernel-agent")
    say(thread, "/ka promote all", number=8)
    ack = wait_replies(thread, 1, number=8)[0]
    assert "comes from the fork `someone/kernel-agent`: the fork's head is what will be checked and built" in ack


def test_cancel_a_queued_job_and_retry_a_failed_one(rig: Callable[..., Rig]) -> None:
    hosts, files = slow_fleet(400)
    r = rig(hosts, files, KA_WORKERS="1", KA_CHECK_WORKERS="1")
    r.fake.permissions["writer"] = "write"
    busy = r.push(r.head()).json()["jobs"][0]  # keeps the only job thread busy for a while
    wait_for(lambda: r.bot.job(busy)["state"] == "running", 30, "the long job to start")
    say(r, "/ka promote h0001", number=1, pull=False)  # answered on the commands' own lane at once
    ack = wait_replies(r, 1, number=1)[0]
    assert "job [" in ack, ack
    queued = int(ack.split("job [")[1].split("]")[0])
    assert r.bot.job(queued)["state"] == "queued"
    say(r, f"/ka cancel {queued}\n/ka cancel {busy}", number=1, pull=False)
    texts = wait_replies(r, 3, number=1)
    assert any(f"`/ka cancel {queued}`: job [{queued}](" in t and ") cancelled" in t for t in texts)
    assert any(f"`/ka cancel {busy}`: job [{busy}](" in t and "it stops after the host it is checking" in t
               for t in texts), texts  # a running parity job stops between hosts
    assert any("`/ka promote h0001` asked by @writer" in t and "**cancelled**" in t for t in texts)
    assert r.bot.job(queued)["state"] == "cancelled"
    record = r.bot.wait_job(busy, 90)
    assert record["state"] == "cancelled" and record["error"] == "cancelled by writer"
    latest = r.final(r.head(), sorted(hosts))
    assert any(s["description"].startswith(f"job {busy} cancelled: cancelled by writer") for s in latest.values())
    # a job that failed: its commit was not on the forge yet
    (r.work / "fleet/h0000.yaml").write_text(AMPERE.replace("test host", "changed"))
    for host in hosts:  # quick to check from here on
        (r.work / f"fleet/{host}.yaml").write_text(AMPERE)
    git(r.work, "add", "-A")
    git(r.work, "commit", "-qm", "not pushed yet")
    late = git(r.work, "rev-parse", "HEAD").decode().strip()
    failed = r.push(late).json()["jobs"][0]
    assert r.bot.wait_job(failed)["state"] == "failed"
    git(r.work, "push", "-q", str(r.bare), "HEAD:refs/heads/main")
    before = len(replies(r, 1))
    say(r, f"/ka retry {failed}", number=1, pull=False)
    texts = wait_replies(r, before + 2, number=1, what="the retry's acknowledgement and result")
    assert f"(retry of job {failed})" in texts[before]
    assert "**succeeded**" in texts[before + 1]


def test_a_job_interrupted_by_a_killed_bot_still_gets_its_reply(rig: Callable[..., Rig]) -> None:
    hosts = {f"h{n:04d}": AMPERE for n in range(1000)}
    r = rig(hosts, KA_WORKERS="1", KA_CHECK_WORKERS="1")
    r.fake.permissions["writer"] = "write"
    answer = say(r, "/ka promote all", number=1, pull=False)
    ack = wait_replies(r, 1, number=1)[0]
    job = int(ack.split("job [")[1].split("]")[0])
    wait_for(lambda: sum(h["state"] != "pending" for h in r.bot.hosts(job).values()) >= 5, 60, "first hosts")
    r.bot.kill()
    r.bot.start()
    result = wait_replies(r, 2, number=1)[1]
    assert "`/ka promote all` asked by @writer" in result and "**interrupted by a restart of the bot**" in result
    assert f"`/ka retry {job}` queues it again" in result
    wait_for(lambda: r.fake.reactions(answer["comment_id"]) == ["eyes", "confused"], 30, "eyes, then confused")


def test_the_summary_is_one_comment_edited_across_pushes(thread: Rig) -> None:
    heads = []
    for n in range(3):
        heads.append(open_pr(thread) if n == 0 else _push_to_pr(thread, n))
        action = "opened" if n == 0 else "synchronized"
        res = thread.bot.send(delivery("pull_request-synchronized-gitea-1.22",
                                       pr_payload(PR, heads[-1], str(thread.bare), action=action)))
        thread.bot.wait_job(res.json()["jobs"][0])
    wait_for(lambda: heads[-1][:12] in "".join(replies(thread)) and "earlier heads (2)" in "".join(replies(thread))
             and "No host" not in "".join(replies(thread)), 60, "the summary of the third head")
    (summary,) = thread.fake.comments(PR)
    assert summary["edits"] >= 2
    body = summary["body"]
    assert f"for the head `{heads[2][:12]}`" in body and "| [`ampere`](" in body
    assert f"`{heads[0][:12]}`" in body and f"`{heads[1][:12]}`" in body


def _push_to_pr(r: Rig, n: int) -> str:
    (r.work / "fleet/ohm.yaml").write_text(manifest(["soc/base"]).replace("test host", f"round {n}"))
    sha = commit_and_push(r.work, r.bare, f"round {n}", ref=f"topic{PR}")
    git(r.bare, "update-ref", f"refs/pull/{PR}/head", sha)
    r.fake.pulls[PR]["head"]["sha"] = sha
    return sha


def test_the_audit_log_has_every_command_and_outcome(thread: Rig) -> None:
    open_pr(thread)
    say(thread, "/ka promote ampere\n/ka build ohm", who="reader")
    say(thread, "/ka promote ampere")
    wait_replies(thread, 3)
    out = subprocess.run([sys.executable, "-m", "bot", "audit", "--json", "--state-dir", str(thread.state_dir)],
                         capture_output=True, text=True, timeout=30, env={**os.environ, "KA_WEBHOOK_SECRET": SECRET})
    assert out.returncode == 0, out.stderr
    entries = [json.loads(line) for line in out.stdout.splitlines()]
    refused = [e for e in entries if e["event"] == "command" and e["result"].startswith("refused")]
    assert {e["command"] for e in refused} == {"/ka promote ampere", "/ka build ohm"}
    assert all(e["who"] == "reader" and e["place"] == "pull request" and e["number"] == PR for e in refused)
    accepted = [e for e in entries if e["result"].startswith("accepted")]
    outcome = [e for e in entries if e["event"] == "outcome" and e["command"] == "/ka promote ampere"]
    assert accepted and outcome and outcome[0]["job_id"] == accepted[0]["job_id"]
    assert outcome[0]["result"].startswith("succeeded") and outcome[0]["hosts"] == "ampere"
    text = subprocess.run([sys.executable, "-m", "bot", "audit", "--host", "ampere", "--since", "2026-01-01",
                           "--state-dir", str(thread.state_dir)], capture_output=True, text=True, timeout=30)
    assert "reader" in text.stdout and "/ka build ohm" not in text.stdout and "/ka promote ampere" in text.stdout
    page = requests.get(f"{thread.bot.url}/jobs/{accepted[0]['job_id']}", timeout=10).text
    assert "<h2>Audit</h2>" in page and "accepted" in page


def test_the_audit_log_is_append_only(thread: Rig) -> None:
    import sqlite3

    say(thread, "/ka help", number=1, pull=False)
    wait_replies(thread, 1, number=1)
    db = sqlite3.connect(thread.state_dir / "ka-bot.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE audit SET result = 'nothing happened'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM audit")
    db.close()


def test_local_mode_deliver_a_comment(rig: Callable[..., Rig]) -> None:
    """What a newcomer who ran ./run does: no forge, a comment delivered from the command line."""
    r = rig({"ampere": AMPERE}, start=False)
    env = {k: v for k, v in r.env.items() if k not in ("KA_FORGEJO_URL", "KA_FORGEJO_TOKEN")}
    r.bots = [BotProcess(r.state_dir, {**env, "KA_LOCAL_PERMISSIONS": "*=write,guest=read"})]
    r.bot.start()
    deliver = [sys.executable, "-m", "bot", "deliver", "--url", r.bot.url + "/webhook", "--repo", REPO]
    secret = {**os.environ, "KA_WEBHOOK_SECRET": SECRET}
    res = subprocess.run([*deliver, "--comment", "/ka promote ampere", "--issue", "1", "--user", "newcomer"],
                         env=secret, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and res.stdout.startswith("202 "), res.stdout + res.stderr

    def parity_jobs() -> list[dict[str, Any]]:
        return requests.get(r.bot.url + "/jobs?format=json&verb=parity", timeout=10).json()["jobs"]
    wait_for(lambda: bool(parity_jobs()), 60, "the promote job")
    job = parity_jobs()[0]
    assert job["requester"]["who"] == "newcomer" and r.bot.wait_job(job["id"])["state"] == "succeeded"
    page = lambda: requests.get(f"{r.bot.url}/jobs/{job['id']}", timeout=10).text  # noqa: E731
    assert "KA_LOCAL_PERMISSIONS=*=write,guest=read" in page()
    wait_for(lambda: "comment on #1" in page() and "recorded" in page(), 30, "the recorded terminal reply")
    # only this repository: its branch (not the sample's master), no link to the sample's forge, no empty commit
    branch = git(r.bare, "symbolic-ref", "--short", "HEAD").decode().strip()
    assert branch != "master" and requests.get(r.bot.url + "/?format=json", timeout=10).json()["branch"] == branch
    first = requests.get(r.bot.url + "/jobs?format=json&verb=commands", timeout=10).json()["jobs"][-1]
    commands_page = requests.get(f"{r.bot.url}/jobs/{first['id']}", timeout=10).text
    for text in (page(), commands_page, requests.get(r.bot.url + "/", timeout=10).text):
        assert "localhost:3000" not in text and "<code></code> ()" not in text
    assert "each command's own" in commands_page
    pushed = subprocess.run([*deliver, str(PROJECT / "tests/samples/forgejo/payloads/push-forgejo-12.json"),
                             "--repo-url", str(r.bare)], env=secret, capture_output=True, text=True, timeout=30)
    assert pushed.stdout.startswith("202 "), pushed.stdout + pushed.stderr  # the head of this repository's branch
    push_job = r.bot.wait_job(json.loads(pushed.stdout[4:])["jobs"][0])
    assert (push_job["commit_sha"], push_job["ref"], push_job["state"]) == (r.head(), f"refs/heads/{branch}",
                                                                            "succeeded")
    res = subprocess.run([*deliver, "--comment", "/ka promote ampere", "--issue", "1", "--user", "guest"],
                         env=secret, capture_output=True, text=True, timeout=30)
    assert res.stdout.startswith("202 ")
    commands = requests.get(r.bot.url + "/jobs?format=json&verb=commands", timeout=10).json()["jobs"][0]
    r.bot.wait_job(commands["id"])
    audit = subprocess.run([sys.executable, "-m", "bot", "audit", "--state-dir", str(r.state_dir)],
                           capture_output=True, text=True, timeout=30).stdout
    refusal = "refused: /ka promote ampere: needs write access; @guest has read"
    assert [ln for ln in audit.splitlines() if "guest" in ln and refusal in ln], audit


def _outside_code(markdown: str) -> str:
    return re.sub(r"`[^`]*`", "", markdown)


def test_hostile_host_names_cannot_mention_link_or_command(thread: Rig) -> None:
    """A fork's file names end up in statuses, tables and the summary: only ever inside code spans."""
    evil = "@alice ![x](http:evil?p) [ka:promote all]"
    git(thread.work, "checkout", "-q", "-B", "topic")
    (thread.work / "fleet" / f"{evil}.yaml").write_text(manifest(["soc/base"]))
    sha = commit_and_push(thread.work, thread.bare, "a fork's odd file name", ref="topic")
    git(thread.bare, "update-ref", f"refs/pull/{PR}/head", sha)
    thread.fake.pulls[PR] = {"number": PR, "state": "open", "base": {"repo": {"full_name": REPO}},
                             "head": {"sha": sha, "repo": {"full_name": "someone/fork"}}}
    res = thread.bot.send(delivery("pull_request-synchronized-gitea-1.22", pr_payload(PR, sha, str(thread.bare))))
    thread.bot.wait_job(res.json()["jobs"][0])
    say(thread, "/ka promote all")
    wait_for(lambda: any("asked by @writer" in b for b in replies(thread)), 60, "the result reply")
    wait_for(lambda: any(evil in b for b in replies(thread) if "kernel-agent summary" in b), 60, "the summary")
    for body in replies(thread):
        plain = _outside_code(body)
        assert "@alice" not in plain and "](http:evil" not in plain and "[ka:" not in plain, body
    statuses = thread.fake.latest(sha)
    assert statuses[f"ka/parity/{evil}"]["state"] == "error"  # its own error, reported as text
    assert len([b for b in replies(thread) if "kernel-agent summary" in b]) == 1


def test_one_command_failing_on_the_forge_does_not_sink_the_others(thread: Rig) -> None:
    thread.fake.pulls.pop(PR, None)  # the forge has no such pull request: asking for its head fails
    say(thread, "/ka help build\n/ka promote ampere")
    (reply,) = wait_replies(thread, 1)
    assert "`/ka help build`: see the table below" in reply
    assert "`/ka promote ampere`: could not be done: `GET " in reply and "HTTP 404" in reply
    out = subprocess.run([sys.executable, "-m", "bot", "audit", "--json", "--state-dir", str(thread.state_dir)],
                         capture_output=True, text=True, timeout=30)
    events = [json.loads(line)["result"].split(":")[0] for line in out.stdout.splitlines()]
    assert "error" in events and "answered" in events


def test_a_summary_whose_answer_was_lost_is_not_posted_twice(rig: Callable[..., Rig]) -> None:
    r = rig({"ampere": AMPERE}, KA_FORGE_TIMEOUT="1")
    r.fake.slow_comment_posts, r.fake.slow_comment_delay = 1, 3.0
    sha = open_pr(r)
    res = r.bot.send(delivery("pull_request-synchronized-gitea-1.22", pr_payload(PR, sha, str(r.bare),
                                                                                 action="opened")))
    r.bot.wait_job(res.json()["jobs"][0])
    wait_for(lambda: any("| `success` |" in b for b in replies(r)), 60, "the summary with its result")
    assert len(r.fake.comments(PR)) == 1
