"""A lab for ka-build tests: build hosts and a repository host (real sshd, real makepkg, real
repo-add), a signing key, the small kernel as a git source on the build hosts, a pacman keyring."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import sshhosts
from tests.support.fleet import fleet_files, manifest
from tests.support.kernel import SmallKernel, build_small_kernel, write_fleet
from tests.support.sshhosts import PR_USER, USER, SshLab, run

CONFIG = 'CONFIG_LOCALVERSION="-ampere"\nCONFIG_OPTION_1=y\nCONFIG_MODULES=y\n'


@dataclass
class BuildLab:
    """Everything a build needs, made once per test session."""

    ssh: SshLab
    kernel: SmallKernel
    gnupghome: Path  # root's: where ka-build signs
    fingerprint: str
    repo_gnupghome: Path  # the build user's: where repo-add -s signs the database
    source: str  # file:// URL of the kernel source, on the build hosts
    pacman_keyring: Path

    def infra(self, tag: str, hosts: tuple[str, ...] = ("boltzmann", "fermi"), references: str = "") -> str:
        """An infra.yaml whose folders on the hosts are this test's own (``references``: a folder on boltzmann
        that parity references may be read from)."""
        build = "".join(f"  - ssh: {h}\n    workdir: {self.ssh.user_folder(tag, h)}\n" for h in hosts)
        repo = self.ssh.user_folder(tag, "repo")
        allowed = f"parity_references:\n  - ssh: boltzmann\n    path: {references}\n" if references else ""
        untrusted = self.ssh.user_folder(tag, "planck", user=PR_USER)
        return (f"build_hosts:\n{build}repository:\n  ssh: hertz\n  path: {repo}\n  name: fleet\n"
                f"  url: file://{repo}\n  key: {self.fingerprint}\n  gnupghome: {self.repo_gnupghome}\n{allowed}"
                f"pull_request_build_hosts:\n  - ssh: planck\n    workdir: {untrusted}\n")

    def parts(self, tag: str, files: dict[str, bytes | str] | None = None,
              includes: tuple[str, ...] = ("board/pinetab2", "driver/bes2600", "soc/base", "arch/defconfig"),
              infra: str | None = None, config: str = "fleet/configs/ampere.config",
              ) -> tuple[dict[str, str], dict[str, bytes | str]]:
        """The manifests and files of a fleet with host ampere, buildable in this lab (``config``: the manifest's
        package.config, as YAML)."""
        package = f"package:\n  config: {config}\n  source:\n    git: {self.source}\n"
        return ({"ampere": manifest(list(includes)) + package},
                {**fleet_files(self.kernel), "fleet/configs/ampere.config": CONFIG,
                 "fleet/infra.yaml": infra if infra is not None else self.infra(tag), **(files or {})})

    def fleet(self, root: Path, tag: str, **kw: Any) -> Path:
        """A committed fleet repository with host ampere, buildable in this lab."""
        return write_fleet(root, *self.parts(tag, **kw))

    def bot_env(self) -> dict[str, str]:
        """What a bot needs to build in this lab."""
        return {"KA_SSH_CONFIG": str(self.ssh.config), "KA_KNOWN_HOSTS": str(self.ssh.known_hosts),
                "KA_GNUPGHOME": str(self.gnupghome), "KA_PACKAGER": "Fleet Test <fleet@example.org>"}

    def env(self) -> dict[str, str]:
        return {**os.environ, "GNUPGHOME": str(self.gnupghome), "KA_SSH_CONFIG": str(self.ssh.config),
                "KA_KNOWN_HOSTS": str(self.ssh.known_hosts), "KA_PACKAGER": "Fleet Test <fleet@example.org>"}

    def ka(self, *args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``ka ARGS`` as a user runs it (a real process), with this lab's ssh config and keyring."""
        return subprocess.run(self.ka_argv(*args), env=self.env(), cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)

    @staticmethod
    def ka_argv(*args: str) -> list[str]:
        """The command line of ``ka ARGS`` (for a process the test runs beside it: self.env() its environment)."""
        return [sys.executable, "-m", "ka", *args]

    def stop_agents(self) -> None:
        """Stop the agents gpg started for the lab's three keyrings: they would outlive the lab otherwise."""
        for home in (self.gnupghome, self.pacman_keyring):
            stop_gpg_agent(home)
        stop_gpg_agent(self.repo_gnupghome, user=USER)

    def build(self, repo: Path, *args: str) -> tuple[int, dict[str, Any], str]:
        """``ka build ampere --json``: exit code, the JSON record, standard error."""
        res = self.ka("build", "ampere", "--repo", str(repo), "--kernel-tree", str(self.kernel.bare), "--json", *args)
        try:
            data = json.loads(res.stdout)
        except ValueError:
            data = {}
        return res.returncode, data, res.stderr


def stop_gpg_agent(home: Path, user: str | None = None) -> None:
    """Stop the agent gpg started for ``home`` on its own: it outlives the test that made it otherwise."""
    argv = ["gpgconf", "--homedir", str(home), "--kill", "all"]
    subprocess.run(["runuser", "-u", user, "--", *argv] if user else argv, capture_output=True, check=False)


def make_build_lab(ssh: SshLab, kernel: SmallKernel, work: Path) -> BuildLab:
    """The signing key (root's keyring, and a copy for the repository host), the kernel source."""
    home = work / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--homedir", str(home)]
    subprocess.run([*gpg, "--passphrase", "", "--quick-generate-key", "Fleet Test <fleet@example.org>", "ed25519",
                    "sign", "never"], check=True, capture_output=True)
    listing = subprocess.run([*gpg, "--with-colons", "--list-secret-keys"], capture_output=True, text=True).stdout
    fpr = next(ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr"))
    secret = subprocess.run([*gpg, "--export-secret-keys", fpr], capture_output=True, check=True).stdout
    repo_home = ssh.user_folder("repo-gnupg")
    run("chmod", "700", str(repo_home), user=USER)
    subprocess.run(["runuser", "-u", USER, "--", "gpg", "--batch", "--homedir", str(repo_home), "--import"],
                   input=secret, check=True, capture_output=True)
    # each lab its own mirror: a second lab of the session (the real kernel's after the small one's) copied
    # into an existing linux.git would land inside it and leave the first lab's tree as the source
    source = ssh.user_folder("src", work.name) / "linux.git"
    if source.exists():
        raise RuntimeError(f"{source} exists: two build labs of one session share a work folder name")
    subprocess.run(["cp", "-a", "--no-target-directory", str(kernel.bare), str(source)], check=True)
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(source)], check=True)
    # the pull requests' build account reads the same mirror, as one on a shared machine would
    run("env", f"HOME={pwd.getpwnam(PR_USER).pw_dir}", "git", "config", "--global", "safe.directory", "*",
        user=PR_USER)
    return BuildLab(ssh, kernel, home, fpr, repo_home, f"file://{source}", _pacman_keyring(work, home, fpr))


def _pacman_keyring(work: Path, gnupghome: Path, fpr: str) -> Path:
    """A pacman keyring (pacman-key --init takes seconds: once a session) trusting the signing key."""
    keyring = work / "pacman-gnupg"
    subprocess.run(["pacman-key", "--gpgdir", str(keyring), "--init"], check=True, capture_output=True)
    public = work / "fleet.pub"
    public.write_bytes(subprocess.run(["gpg", "--homedir", str(gnupghome), "--export", fpr], capture_output=True,
                                      check=True).stdout)
    subprocess.run(["pacman-key", "--gpgdir", str(keyring), "--add", str(public)], check=True, capture_output=True)
    subprocess.run(["pacman-key", "--gpgdir", str(keyring), "--lsign-key", fpr], check=True, capture_output=True)
    return keyring


@contextmanager
def bench_lab(prefix: str) -> Iterator[tuple[BuildLab, Path]]:
    """For a benchmark run by hand (root, the kabuild user): sshd hosts boltzmann, fermi and hertz, a build lab
    with the small test kernel, and a work folder; all gone after."""
    why = sshhosts.available()
    if why:
        sys.exit(f"needs {why}")
    ssh = sshhosts.make_lab()
    try:
        for number, name in enumerate(("boltzmann", "fermi", "hertz"), start=11):
            ssh.add(name, number)
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            work = Path(tmp)
            lab = make_build_lab(ssh, build_small_kernel(work / "kernel"), work)
            try:
                yield lab, work
            finally:
                lab.stop_agents()
    finally:
        ssh.stop()
