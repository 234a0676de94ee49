"""The deployment as written: scripts/deploy as root (service user, folders, kernel tree, secret, env file),
then ka-bot.service's ExecStart run as that user with the unit's environment, env file and credentials, as
systemd would, and a signed delivery whose parity job reads the imported tree. Everything lives in a
throwaway root folder, for a throwaway user; a small kernel tarball stands in for Debian's."""

from __future__ import annotations

import grp
import lzma
import os
import pwd
import secrets
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from ka.promote.kernel_import import version_from_makefile
from tests.support import PROJECT
from tests.support.botkit import REPO, BotProcess, fleet_forge_repo, wait_for
from tests.support.fleet import fleet_files, manifest
from tests.support.kernel import BASE_TAG, SmallKernel, git
from tests.support.needs import require

DEPLOY = PROJECT / "scripts" / "deploy"
UNIT = PROJECT / "systemd" / "ka-bot.service"
VENV_BIN = PROJECT / ".venv" / "bin"
#: systemd's PATH for services
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
#: the sample host's includes (tests/support/fleet.py's AMPERE), on the imported tree's tag
INCLUDES = ["board/pinetab2", "driver/bes2600", "soc/base", "arch/defconfig"]


@dataclass
class Site:
    """One deployment: its root folder (state, etc, tarball, fleet inside) and its service user."""

    root: Path
    user: str
    bots: list[BotProcess] = field(default_factory=list)

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def tarball(self) -> Path:
        return self.root / "linux-source-6.12.tar.xz"

    def here(self, text: str) -> str:
        """``text`` with the production paths moved into this site (and this checkout)."""
        moved = {"/opt/kernel-agent": PROJECT, "/var/lib/kernel-agent": self.state, "/etc/kernel-agent": self.etc}
        for production, local in moved.items():
            text = text.replace(production, str(local))
        return text

    def deploy(self, **extra: str) -> subprocess.CompletedProcess[str]:
        """scripts/deploy as root, pointed at this site (``extra``: more settings)."""
        env = {"PATH": os.environ.get("PATH", SYSTEMD_PATH), "KA_PREFIX": str(PROJECT), "KA_SERVICE_USER": self.user,
               "KA_STATE": str(self.state), "KA_ETC": str(self.etc), "KA_TARBALL": str(self.tarball), **extra}
        return subprocess.run([str(DEPLOY)], env=env, capture_output=True, text=True, timeout=120)

    def as_user(self, *argv: str) -> str:
        """Run ``argv`` as the service user (git refuses another user's repository, root's included)."""
        return subprocess.run(["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--init-groups", "--",
                               *argv], capture_output=True, text=True, check=True, cwd="/", timeout=30,
                              env={"PATH": SYSTEMD_PATH, "HOME": str(self.state)}).stdout


@pytest.fixture
def site() -> Iterator[Site]:
    """A throwaway deployment root and user name; the user, its group, its processes and files go after."""
    require(os.geteuid() == 0, "root: scripts/deploy creates a system user")
    for tool in ("setpriv", "useradd", "userdel", "git"):
        require(shutil.which(tool) is not None, f"{tool} (util-linux, passwd, git)")
    require((VENV_BIN / "ka-bot").is_file(), f"{VENV_BIN}/ka-bot (scripts/setup)")
    # not pytest's tmp_path: its parents are root's 0700 folders, which the service user could not walk
    root = Path(tempfile.mkdtemp(prefix="ka-deploy-", dir="/tmp"))
    root.chmod(0o755)
    s = Site(root, f"ka-deploytest-{secrets.token_hex(3)}")
    try:
        yield s
    finally:
        for bot in s.bots:
            bot.stop()
        subprocess.run(["userdel", s.user], capture_output=True, check=False)
        if s.user in {g.gr_name for g in grp.getgrall()}:
            subprocess.run(["groupdel", s.user], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def anyone_may_run(path: Path) -> bool:
    """Every folder down to ``path`` (resolved) is open to other users, a service user among them."""
    real = path.resolve()
    return all(p.stat().st_mode & 0o001 for p in (real, *real.parents))


def small_tarball(k: SmallKernel, path: Path) -> str:
    """The small kernel as a source tarball laid out as Debian's; returns the tag the import gives it."""
    tar = git(k.bare, "archive", "--format=tar", "--prefix=linux-source-6.12/", BASE_TAG)
    path.write_bytes(lzma.compress(tar, format=lzma.FORMAT_XZ))
    path.chmod(0o644)
    tag = version_from_makefile(git(k.bare, "show", f"{BASE_TAG}:Makefile"))
    assert tag is not None
    return tag


def service(unit: Path) -> dict[str, list[str]]:
    """The [Service] section of a unit file: key → its values, in order."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as systemd's EnvironmentFile= reads them (comments and blank lines skipped)."""
    pairs = (ln.partition("=") for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#"))
    return {k.strip(): v.strip().strip('"') for k, _, v in pairs}


def credentials(s: Site, unit: dict[str, list[str]]) -> Path:
    """LoadCredential= done as systemd does: copies only the service user may read; a missing source fails."""
    folder = s.root / "credentials"
    folder.mkdir(mode=0o700)
    for item in unit["LoadCredential"]:
        name, _, source = item.partition(":")
        src = Path(s.here(source))
        assert src.is_file(), f"{UNIT.name}: LoadCredential={item}: {src} is missing, systemd would not start it"
        shutil.copyfile(src, folder / name)
        (folder / name).chmod(0o400)
        shutil.chown(folder / name, s.user, s.user)
    folder.chmod(0o500)
    shutil.chown(folder, s.user, s.user)
    return folder


def unit_environment(s: Site, unit: dict[str, list[str]], creds: Path) -> dict[str, str]:
    """What systemd hands ExecStart: the user's basics, Environment= (``%d``: the credentials), then the
    EnvironmentFile= over it; nothing of this process's own environment."""
    env = {"PATH": SYSTEMD_PATH, "LANG": "C.UTF-8", "HOME": pwd.getpwnam(s.user).pw_dir, "USER": s.user,
           "LOGNAME": s.user}
    for value in unit["Environment"]:
        for item in shlex.split(value):
            key, _, val = item.partition("=")
            env[key] = s.here(val).replace("%d", str(creds))
    for name in unit["EnvironmentFile"]:
        optional, path = name.startswith("-"), Path(s.here(name.lstrip("-")))
        if path.is_file() or not optional:
            env.update(env_file(path))
    return env


@dataclass
class ServiceBot(BotProcess):
    """ka-bot.service's ExecStart as its user with the unit's environment alone, as systemd starts it."""

    argv: list[str] = field(default_factory=list)

    def command(self) -> list[str]:
        return self.argv

    def environment(self) -> dict[str, str]:
        return self.env


def exec_start(s: Site, unit: dict[str, list[str]], port: int) -> list[str]:
    """The unit's ExecStart as the service user (setpriv: what User=/Group= do), on ``port``."""
    argv = [s.here(a) for a in shlex.split(unit["ExecStart"][0])]
    argv[argv.index("--port") + 1] = str(port)
    return ["setpriv", f"--reuid={s.user}", f"--regid={s.user}", "--init-groups", "--", *argv]


def start_unit(s: Site, repo_url: Path) -> ServiceBot:
    """Start ka-bot.service's command in local mode (no forge: KA_FORGEJO_URL dropped, as an operator
    without Forgejo would comment it out), fetching from ``repo_url``."""
    unit = service(UNIT)
    bot = ServiceBot(s.state, {}, cwd="/")
    bot.env = {**unit_environment(s, unit, credentials(s, unit)), "KA_REPO": REPO, "KA_REPO_URL": str(repo_url),
               "KA_PUBLIC_URL": bot.url, "KA_LIVE_INTERVAL": "0"}
    del bot.env["KA_FORGEJO_URL"]
    bot.argv = exec_start(s, unit, bot.port)
    s.bots.append(bot)
    return bot.start()


def assert_layout(s: Site) -> None:
    """Owners and modes as the deployment section says; the env file names the folders deploy made."""
    uid, gid = pwd.getpwnam(s.user).pw_uid, grp.getgrnam(s.user).gr_gid
    want = {s.state: (uid, 0o750), s.state / ".ssh": (uid, 0o700), s.state / ".gnupg": (uid, 0o700),
            s.state / "linux.git": (uid, None), s.etc: (0, 0o755), s.etc / "webhook-secret": (0, 0o600),
            s.etc / "ka-bot.env": (0, 0o640)}
    for path, (owner, mode) in want.items():
        st = path.stat()
        assert st.st_uid == owner and (mode is None or st.st_mode & 0o7777 == mode), f"{path}: {st}"
    assert (s.etc / "ka-bot.env").stat().st_gid == gid
    env = env_file(s.etc / "ka-bot.env")
    assert env["KA_KERNEL_TREE"] == str(s.state / "linux.git"), f"ka-bot.env: KA_KERNEL_TREE={env['KA_KERNEL_TREE']}"
    assert Path(env["KA_SSH_CONFIG"]).parent == Path(env["KA_KNOWN_HOSTS"]).parent == s.state / ".ssh"
    assert env["KA_GNUPGHOME"] == str(s.state / ".gnupg")


def deploy_twice(s: Site) -> None:
    """The first run does every step; the second keeps each one as it is (and hands back a tree root took, as
    one imported by hand would be); neither prints the secret."""
    first = s.deploy()
    assert first.returncode == 0, first.stdout + first.stderr
    assert "deploy: kernel tree: importing" in first.stdout and "deploy: done" in first.stdout, first.stdout
    secret, env = (s.etc / "webhook-secret").read_bytes(), (s.etc / "ka-bot.env").read_bytes()
    subprocess.run(["chown", "-R", "root:root", str(s.state / "linux.git")], check=True)
    again = s.deploy()
    assert again.returncode == 0, again.stdout + again.stderr
    for kept in ("exists", "not imported again", f"owned by root, handing it to {s.user}", "present: kept",
                 "deploy: done"):
        assert kept in again.stdout, again.stdout
    assert "importing" not in again.stdout, again.stdout
    assert "warning" not in first.stdout + again.stdout, first.stdout + again.stdout
    assert (s.etc / "webhook-secret").read_bytes() == secret and (s.etc / "ka-bot.env").read_bytes() == env
    assert secret.strip().decode() not in first.stdout + first.stderr + again.stdout + again.stderr


def deliver_comment(bot: BotProcess, s: Site, repo_url: Path) -> dict[str, Any]:
    """``/ka promote ampere`` signed with the deployed secret file; the parity job it starts, once done."""
    # deliver reads the repository as root, who trusts the service user's repository for this once (in a
    # global config file: git drops command-line settings for the upload-pack it reads a local one with)
    trust = s.root / "root.gitconfig"
    trust.write_text(f"[safe]\n\tdirectory = {repo_url}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KA_")}
    env.update({"KA_WEBHOOK_SECRET_FILE": str(s.etc / "webhook-secret"), "GIT_CONFIG_GLOBAL": str(trust)})
    res = subprocess.run([str(VENV_BIN / "ka-bot"), "deliver", "--comment", "/ka promote ampere", "--issue", "1",
                          "--user", "newcomer", "--url", bot.url + "/webhook", "--repo", REPO,
                          "--repo-url", str(repo_url)], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and res.stdout.startswith("202 "), res.stdout + res.stderr

    def parity_jobs() -> list[dict[str, Any]]:
        return list(requests.get(bot.url + "/jobs?format=json&verb=parity", timeout=10).json()["jobs"])
    wait_for(lambda: bool(parity_jobs()), 60, "the parity job of /ka promote ampere")
    return bot.wait_job(parity_jobs()[0]["id"])


def test_deploy_then_the_unit_checks_a_delivery(site: Site, small_kernel: SmallKernel) -> None:
    """The documented steps, the unit's own command as its user, a signed delivery: the tree is read."""
    python = (VENV_BIN / "python").resolve()
    require(anyone_may_run(python), f"{VENV_BIN}/python is {python}, which a service user may not run: make the "
                                    "venv with Debian's python3 (PATH=/usr/sbin:/usr/bin:/sbin:/bin scripts/setup)")
    tag = small_tarball(small_kernel, site.tarball)
    deploy_twice(site)
    assert_layout(site)
    tagged = site.as_user("git", "-C", str(site.state / "linux.git"), "rev-parse", f"{tag}^{{commit}}").strip()
    _, bare = fleet_forge_repo(site.root, {"ampere": manifest(INCLUDES, ref=tag)}, fleet_files(small_kernel))
    # local mode fetches it with git, which reads only its own user's repositories
    subprocess.run(["chown", "-R", f"{site.user}:{site.user}", str(bare)], check=True)
    # the operator's step for a Forgejo deployment: the unit loads the token whether or not it is used
    (site.etc / "forgejo-token").write_text("not-used-in-local-mode\n")
    (site.etc / "forgejo-token").chmod(0o600)
    bot = start_unit(site, bare)
    assert bot.proc is not None and Path(f"/proc/{bot.proc.pid}").stat().st_uid == pwd.getpwnam(site.user).pw_uid
    job = deliver_comment(bot, site, bare)
    assert job["state"] == "succeeded", f"job {job['id']}: {job['error']}; {job['hosts']}\n{bot.log()}"
    detail = bot.hosts(job["id"])["ampere"]["detail"]
    # applies (not null: "no kernel tree") on the imported commit: the bot read $KA_STATE/linux.git
    assert (detail["applies"], detail["baseline_commit"]) == (True, tagged), f"{detail}\n{bot.log()}"
    bot.stop()  # SIGTERM, as systemctl stop: it ends by itself, not by the SIGKILL that follows 20 s later
    assert bot.proc.returncode in (0, -15), f"exit {bot.proc.returncode}\n{bot.log()}"


def test_units_are_installed_only_for_the_production_paths(site: Site) -> None:
    """The units name /var/lib/kernel-agent and /etc/kernel-agent: installed for a deployment elsewhere they
    would run another one, so KA_INSTALL_UNITS=1 is refused there, before anything is made."""
    res = site.deploy(KA_INSTALL_UNITS="1")
    assert res.returncode == 2 and "KA_INSTALL_UNITS=1: the units name /var/lib/kernel-agent" in res.stderr, res
    assert not site.state.exists() and site.user not in {p.pw_name for p in pwd.getpwall()}
