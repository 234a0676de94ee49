"""Trust boundaries, end to end: what a fork's pull request can make the bot reach.

A real bot, the fake Forgejo, real sshd hosts.  A pull request's manifest may name parity
references anywhere; the bot reads only the folders the default branch's infra.yaml allows,
connects nowhere else, and shows no byte of a reference in public.  A pull request's build
runs on the pull requests' build host (another account): it cannot touch what the default
branch's builds compile, and it is neither signed nor published.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import requests

from tests.support.botkit import Rig, delivery, pr_payload, wait_for
from tests.support.buildlab import BuildLab
from tests.support.fleet import manifest
from tests.support.kernel import MAKEFILE
from tests.support.sshhosts import PR_USER, Tripwire
from tests.support.threads import PR, open_pr, replies, say, wait_replies


def _public(r: Rig, job: int, sha: str) -> str:
    """Everything the world can read about a job: statuses, comments, the job page, its JSON and log."""
    pages = [requests.get(f"{r.bot.url}/jobs/{job}", timeout=10).text,
             requests.get(f"{r.bot.url}/jobs/{job}?format=json", timeout=10).text,
             requests.get(f"{r.bot.url}/jobs/{job}/live?offset=0", timeout=10).text,
             requests.get(f"{r.bot.url}/", timeout=10).text]
    return "\n".join([json.dumps(r.fake.statuses(sha)), *replies(r), *pages])


def _fork_pr(r: Rig, files: dict[str, str]) -> str:
    """A fork's pull request #PR changing ``files``; its head."""
    for name, text in files.items():
        (r.work / name).write_text(text)
    return open_pr(r, fork="someone/fork")


def test_a_forks_parity_references_reach_no_host_and_no_byte_is_shown(rig: Callable[..., Rig],
                                                                      build_lab: BuildLab, tmp_path: Path) -> None:
    lab = build_lab.ssh
    allowed = lab.user_folder("trust-refs", "canonical")
    secret = lab.user_folder("trust-refs", "private") / "key"
    marker = f"SECRET-{uuid.uuid4().hex}"
    secret.write_text(f"-----BEGIN PRIVATE KEY-----\n{marker}\n")
    hosts, files = build_lab.parts("trust-refs", infra=build_lab.infra("trust-refs", references=str(allowed)))
    base = manifest(["soc/base"])
    cumulative = allowed / "ohm.patch"  # the default branch names it: inside the allowed folder, and not ours
    cumulative.write_text(f"diff --git a/x b/x\n{marker}\n")
    other = allowed / "other.patch"  # inside the allowed folder too, but no manifest of the default branch names it
    other.write_text(f"{marker}\n")
    hosts.update({"fresnel": base, "ohm": base + f"parity:\n  canonical: boltzmann:{cumulative}\n", "kelvin": base,
                  "joule": base})
    tripwire = Tripwire()
    config = tmp_path / "ssh_config"
    config.write_text(lab.config.read_text() + tripwire.config())
    try:
        r = rig(hosts, files, **{**build_lab.bot_env(), "KA_SSH_CONFIG": str(config)})
        sha = _fork_pr(r, {
            "fleet/ampere.yaml": hosts["ampere"] + f"parity:\n  canonical: boltzmann:{secret}\n",
            "fleet/fresnel.yaml": base + f"parity:\n  canonical: boltzmann:{secret.parent}/none\n",
            "fleet/kelvin.yaml": base + f"parity:\n  canonical: tripwire:{secret}\n",
            "fleet/joule.yaml": base + f"parity:\n  canonical: boltzmann:{other}\n",
        })
        res = r.bot.send(delivery("pull_request-opened-fork-forgejo-12", pr_payload(PR, sha, str(r.bare), "opened")))
        job = res.json()["jobs"][0]
        r.bot.wait_job(job)
        latest = r.final(sha, ["ampere", "fresnel", "ohm", "kelvin", "joule"])
    finally:
        tripwire.close()
    assert tripwire.connections == 0
    assert {latest[f"ka/parity/{h}"]["state"] for h in ("ampere", "fresnel", "kelvin", "joule")} == {"error"}
    results = r.bot.hosts(job)
    # an existing file and a missing one look the same: only the path the manifest wrote differs
    assert results["ampere"]["description"].replace(str(secret), "X") == \
        results["fresnel"]["description"].replace(f"{secret.parent}/none", "X")
    for host in ("ampere", "joule", "kelvin"):
        assert "may compare only with the parity references the default branch" in results[host]["description"]
    ohm = latest["ka/parity/ohm"]
    assert ohm["state"] == "failure" and "parity mismatch" in ohm["description"], ohm
    public = _public(r, job, sha)
    assert marker not in public and "PRIVATE KEY" not in public
    detail = results["ohm"]["detail"]["parity_detail"]
    assert isinstance(detail["offset"], int) and len(detail["expected_b2sum"]) == 128


def test_an_unreachable_reference_host_is_said_without_its_name_or_path(rig: Callable[..., Rig],
                                                                        build_lab: BuildLab) -> None:
    """Environment trouble (a host down, a key changed, a missing file) goes to the operator's log."""
    allowed = build_lab.ssh.user_folder("trust-down", "canonical")
    hosts, files = build_lab.parts("trust-down", infra=build_lab.infra("trust-down", references=str(allowed)))
    hosts["ampere"] += f"parity:\n  canonical: boltzmann:{allowed}/gone.patch\n"
    r = rig(hosts, files, **build_lab.bot_env())
    sha = r.head()
    r.bot.wait_job(r.push(sha).json()["jobs"][0])
    status = r.final(sha, ["ampere"])["ka/parity/ampere"]
    assert status["state"] == "error"
    assert "parity reference unavailable" in status["description"]
    assert "boltzmann" not in status["description"] and str(allowed) not in status["description"]
    assert f"{allowed}/gone.patch: no such file" in r.bot.log()


def _poisoned_makefile(target: Path) -> str:
    """The kernel's Makefile as a pull request might change it: building writes where the default branch's
    builds keep their sources."""
    return MAKEFILE.replace("Image:\n", f"Image:\n\t-touch {target}\n")


def test_a_pull_requests_build_cannot_touch_the_default_branchs_builds(rig: Callable[..., Rig],
                                                                        build_lab: BuildLab) -> None:
    kernel = build_lab.kernel
    poison = build_lab.ssh.user_folder("trust-build", "boltzmann", "sources") / "POISON"
    patch = kernel.diff("Makefile: reach out", {"Makefile": _poisoned_makefile(poison)})
    hosts, files = build_lab.parts("trust-build")
    r = rig(hosts, files, **build_lab.bot_env())
    r.fake.permissions["writer"] = "write"
    reach = hosts["ampere"].replace("  - soc/base\n", "  - soc/base\n  - module/reach\n")
    sha = _fork_pr(r, {"patches/module/reach.patch": patch.decode(), "fleet/ampere.yaml": reach})
    say(r, "/ka build ampere")
    ack, result = wait_replies(r, 2)
    assert "**succeeded**" in result, result
    assert "Built on `planck`" in result and "neither signed nor published: a pull request's commit" in result
    assert "| unsigned |" in result.replace("`", "")
    assert not poison.exists()  # the pull requests' account cannot write there
    assert f"touch: cannot touch '{poison}': Permission denied" in \
        requests.get(f"{r.bot.url}/jobs/{ack.split('job [')[1].split(']')[0]}/live?offset=0", timeout=10).json()["log"]
    status = r.fake.latest(sha)["ka/build/ampere"]
    assert status["state"] == "success" and "built on planck, not published" in status["description"]
    repo = build_lab.ssh.user_folder("trust-build", "repo")
    assert not list(repo.glob("*.pkg.tar.zst")) and not (repo / "fleet.db.tar.zst").exists()
    assert list(build_lab.ssh.user_folder("trust-build", "planck", user=PR_USER).glob("sources/*"))


def test_the_default_branchs_build_is_signed_and_published(rig: Callable[..., Rig], build_lab: BuildLab) -> None:
    hosts, files = build_lab.parts("trust-main")
    r = rig(hosts, files, **build_lab.bot_env())
    r.fake.permissions["writer"] = "write"
    say(r, "/ka build ampere", number=3, pull=False)  # an issue's thread: the default branch's head
    wait_for(lambda: len(replies(r, 3)) >= 2, 180, "the build's result")
    result = replies(r, 3)[1]
    assert "**succeeded**" in result and "Built on `boltzmann`; published to `hertz` `fleet.db.tar.zst`" in result
    assert build_lab.fingerprint in result
