"""/ka install, /ka rollback and /ka status through the fake Forgejo: a real bot, a real target host
(sshd rooted in a per-test folder), a real backup host, packages built by ka-build."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import requests

from tests.support.botkit import Rig, wait_for
from tests.support.installfaults import gate, wait_file
from tests.support.installlab import CONFIG, NEW, OLD, InstallLab, fleet_files
from tests.support.threads import say, wait_replies

ISSUE = 12


def install_rig(rig: Callable[..., Rig], lab: InstallLab, tag: str) -> tuple[Rig, Path]:
    target = lab.targets.target(tag)
    files = {**fleet_files(lab.build.kernel), "fleet/configs/ampere.config": CONFIG,
             "fleet/infra.yaml": lab.infra(tag, operators="operators:\n  ampere: [alice]\n")}
    r = rig({"ampere": lab.manifest(target)}, files, **lab.build.bot_env())
    r.fake.permissions.update({"writer": "write", "alice": "write"})
    return r, target.root


def test_install_needs_an_operator_and_answers_with_the_kernels_the_backup_and_the_heartbeat(
        rig: Callable[..., Rig], install_lab: InstallLab) -> None:
    r, root = install_rig(rig, install_lab, "bot-install")
    say(r, "/ka install ampere", who="writer", number=ISSUE, pull=False)
    refusal = wait_replies(r, 1, number=ISSUE)[0]
    assert "`/ka install ampere`: needs admin or owner, or an operator of the hosts in fleet/infra.yaml; " \
           "@writer has **write**" in refusal
    assert (root / "boot/Image").read_bytes().startswith(f"Linux version {OLD} ".encode())

    answer = say(r, "/ka install ampere", who="alice", number=ISSUE, pull=False)
    ack = wait_replies(r, 2, number=ISSUE)[1]
    assert "the newest published package, with the settings on `main`" in ack
    job = int(ack.split("job [")[1].split("]")[0])
    record = r.bot.wait_job(job, timeout=180)
    assert record["state"] == "succeeded", record
    result = wait_replies(r, 3, number=ISSUE)[2]
    assert "`/ka install ampere` asked by @alice" in result and "**succeeded**" in result
    assert f"`ampere`: `{OLD}` → `{NEW}` (package `6.12.0-2`): `succeeded`" in result
    assert "Backup: `hertz:" in result and f"/ampere/{OLD}`" in result
    assert "Heartbeat: down after" in result and f"running `{NEW}`" in result
    assert "ka-install ampere --rev " in result
    sha = record["commit_sha"]
    status = r.fake.latest(sha)["ka/install/ampere"]
    assert status["state"] == "success" and f"runs {NEW}" in status["description"]
    wait_for(lambda: r.fake.reactions(answer["comment_id"]) == ["eyes", "rocket"], 30, "eyes, then rocket")
    log = requests.get(f"{r.bot.url}/jobs/{job}/live?offset=0", timeout=10).json()["log"]
    assert "== back up" in log and "== reboot" in log and "down at" in log and "up at" in log
    # the fleet page shows the host as the install left it
    page = requests.get(f"{r.bot.url}/", headers={"Accept": "application/json"}, timeout=10).json()
    assert [(h["host"], h["running"], h["installed"]) for h in page["live"]] == [("ampere", NEW, "6.12.0-2")]


def test_ka_status_asks_the_hosts_and_rollback_goes_back(rig: Callable[..., Rig], install_lab: InstallLab) -> None:
    r, root = install_rig(rig, install_lab, "bot-status")
    say(r, "/ka install ampere --no-reboot", who="alice", number=ISSUE, pull=False)
    result = wait_replies(r, 2, number=ISSUE)[1]
    assert "A reboot is pending: the host still runs" in result
    say(r, "/ka status", who="writer", number=ISSUE, pull=False)
    status = wait_replies(r, 3, number=ISSUE)[2]
    assert "| HOST | UP | RUNNING | INSTALLED |" in status
    assert f"| `ampere` | `yes` | `{OLD}` | `6.12.0-2` | `6.12.0-2 (installed)` | `6.12.0-2` | " \
           "`no: it is 6.12.0-1, the manifest builds 6.12.0-2` | `installed, reboot pending" in status
    say(r, "/ka rollback ampere", who="alice", number=ISSUE, pull=False)
    back = wait_replies(r, 5, number=ISSUE)[4]
    assert "`/ka rollback ampere` asked by @alice" in back and "**succeeded**" in back, back
    assert (root / "boot/Image").read_bytes().startswith(f"Linux version {OLD} ".encode())


def test_an_install_from_the_bot_while_one_from_the_cli_runs_is_refused_and_says_by_whom(
        rig: Callable[..., Rig], install_lab: InstallLab, tmp_path: Path) -> None:
    """The host's own lock decides between a maintainer's terminal and the bot (two machines, two out folders)."""
    r, root = install_rig(rig, install_lab, "bot-cli")
    target = next(t for t in install_lab.targets.made if t.root == root)
    gate(target)
    proc = install_lab.popen(install_lab.fleet(tmp_path / "fleet", "bot-cli", target))
    try:
        wait_file(root / "run/in-pacman")
        say(r, "/ka install ampere", who="alice", number=ISSUE, pull=False)
        job = int(wait_replies(r, 1, number=ISSUE)[0].split("job [")[1].split("]")[0])
        record = r.bot.wait_job(job, timeout=180)
        result = wait_replies(r, 2, number=ISSUE)[1]
    finally:
        (root / "run/gate").touch()
        _, err = proc.communicate(timeout=300)
    assert record["state"] == "failed", record
    assert "another install holds" in result and "install.lock" in result and "nothing was changed" in result
    assert proc.returncode == 0, err
    assert target.boots == [OLD, NEW]
    assert (root / "var/log/pacman.log").read_text().count("upgraded linux-ampere") == 1


def test_install_all_is_a_rollout_that_stops_at_a_canary_that_falls_back(rig: Callable[..., Rig],
                                                                          install_lab: InstallLab) -> None:
    canary, later = install_lab.targets.target("bot-wave-a", bad=(NEW,)), install_lab.targets.target("bot-wave-b")
    image = (later.root / "boot/Image").read_bytes()
    files = {**fleet_files(install_lab.build.kernel), "fleet/configs/ampere.config": CONFIG,
             "fleet/infra.yaml": install_lab.infra("bot-waves", operators="operators:\n  ampere: [alice]\n")}
    volta = install_lab.manifest(later).replace("package:\n", "package:\n  pkgbase: linux-ampere\n", 1) + "  wave: 2\n"
    r = rig({"ampere": install_lab.manifest(canary), "volta": volta}, files, **install_lab.build.bot_env())
    r.fake.permissions.update({"alice": "write", "boss": "admin"})
    say(r, "/ka install all", who="alice", number=ISSUE, pull=False)  # an operator of ampere only
    assert "needs admin or owner" in wait_replies(r, 1, number=ISSUE)[0]
    say(r, "/ka install all", who="boss", number=ISSUE, pull=False)
    ack = wait_replies(r, 2, number=ISSUE)[1]
    assert "in waves, the first host alone as the canary" in ack, ack
    job = int(ack.split("job [")[1].split("]")[0])
    record = r.bot.wait_job(job, timeout=300)
    assert record["state"] == "failed" and record["error"] == "1 of 2 hosts failed, 1 not started", record
    result = wait_replies(r, 3, number=ISSUE)[2]
    assert "| host | wave | outcome | kernel | backup | why not |" in result, result
    assert f"| `ampere` | 1 | `fell back` | `{OLD} → {NEW}` | `hertz:" in result and "the host fell back to" in result
    assert "| `volta` | 2 | `not started` | `—` | `—` | `not started: the rollout stopped at an earlier host" in result
    assert "ka-install ampere volta --rev " in result
    statuses = r.fake.latest(record["commit_sha"])
    assert statuses["ka/install/ampere"]["state"] == "failure"
    assert statuses["ka/install/volta"]["state"] == "error" and "not started" in statuses["ka/install/volta"][
        "description"]
    assert later.boots == [OLD] and (later.root / "boot/Image").read_bytes() == image  # its first boot only
