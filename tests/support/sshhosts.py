"""Real sshd hosts on loopback for tests: build hosts, a repository host, fleet hosts.

Each host is its own ``sshd -D`` on its own loopback address, with an ed25519 host key
pinned in a known_hosts file and an ssh_config that maps the fleet's names to it.  Logins go
to the unprivileged ``kabuild`` account (makepkg refuses root), or ``kabuild-pr`` for the pull
requests' build host; their files for the tests live in folders they own.  Hosts can be
stopped and started again (a build host that is down).

A run takes a loopback network of its own, ``127.77.<k>.0/24``, held by a lock file for as
long as it lives: two test runs side by side (or a user's script beside one) never reach each
other's hosts, whose keys they do not know.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

USER = "kabuild"
PR_USER = "kabuild-pr"
PORT = 2222
LOCKS = Path(tempfile.gettempdir()) / "ka-test-networks"


class Network:
    """A loopback /24 no other living test run uses: ``127.77.<k>.<n>`` (k from 1 to 250)."""

    def __init__(self) -> None:
        LOCKS.mkdir(mode=0o1777, exist_ok=True)
        start = os.getpid() % 250
        for i in range(250):
            k = 1 + (start + i) % 250
            fh = open(LOCKS / f"127.77.{k}.lock", "a")  # noqa: SIM115 - held for the life of the run
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            self.prefix, self._lock = f"127.77.{k}", fh
            return
        raise AssertionError(f"every loopback network under {LOCKS} is held by another test run")

    def address(self, number: int) -> str:
        """The run's own address ``number`` (11, 12, …)."""
        return f"{self.prefix}.{number}"


_NETWORK: Network | None = None


def network() -> Network:
    """This run's loopback network (taken at first use, held until the process exits)."""
    global _NETWORK
    if _NETWORK is None:
        _NETWORK = Network()
    return _NETWORK


def available() -> str | None:
    """Why real ssh hosts cannot run here, or None."""
    if os.geteuid() != 0:
        return "root (sshd test hosts log in as another user)"
    for user in (USER, PR_USER):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"the {user} user (scripts/setup test creates it)"
    for tool in ("/usr/sbin/sshd", "ssh-keygen"):
        if not shutil.which(tool):
            return f"{tool} (openssh-server, openssh-client)"
    return None


def run(*argv: str, user: str | None = None, **kw: object) -> subprocess.CompletedProcess[str]:
    """A command on this machine, as root or as the build user (runuser)."""
    full = ["runuser", "-u", user, "--", *argv] if user else list(argv)
    res = subprocess.run(full, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if res.returncode != 0:
        raise AssertionError(f"{full} exited {res.returncode}: {res.stderr.strip()[-2000:]}")
    return res  # type: ignore[no-any-return]


def _die_with_tests() -> None:
    """In sshd's child before exec: SIGTERM when the test process ends, even by SIGKILL (Linux prctl), so that
    a killed run leaves no sshd listening."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


@dataclass
class SshHost:
    """One sshd on its own loopback address."""

    name: str
    address: str
    folder: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SshHost:
        """Start sshd and wait until it accepts connections."""
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(self.folder / "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=open(self.folder / "sshd.log", "ab"),  # noqa: SIM115
                                     start_new_session=True, preexec_fn=_die_with_tests)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((self.address, PORT), timeout=1):
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"sshd for {self.name} exited: {(self.folder / 'sshd.log').read_text()}")
            time.sleep(0.05)
        raise AssertionError(f"sshd for {self.name} did not start")

    def stop(self) -> None:
        """Stop sshd and every session it spawned (a host that went down)."""
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class SshLab:
    """A set of sshd hosts, the client key, ssh_config and known_hosts that reach them."""

    root: Path  # owned by root: keys and configs
    home: Path  # owned by the build user: what the hosts' sessions may touch
    hosts: dict[str, SshHost] = field(default_factory=dict)
    homes: dict[str, Path] = field(default_factory=dict)  # user → this run's folder in that user's home

    @property
    def config(self) -> Path:
        return self.root / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def key(self) -> Path:
        return self.root / "id_ed25519"

    def address(self, number: int) -> str:
        """This run's loopback address ``number``."""
        return network().address(number)

    def add(self, name: str, number: int, extra: tuple[str, ...] = (), user: str = USER) -> SshHost:
        """A new host ``name`` at this run's address ``number``, logging in as ``user`` (``extra`` lines in its
        sshd_config); started."""
        folder = self.root / name
        folder.mkdir()
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(folder / "host_key"))
        address = self.address(number)
        (folder / "sshd_config").write_text("\n".join([
            f"ListenAddress {address}:{PORT}", f"HostKey {folder / 'host_key'}", f"PidFile {folder / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}", "UsePAM no", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "StrictModes no",
            f"AllowUsers {user}", "Subsystem sftp internal-sftp", "LogLevel ERROR", *extra, ""]))
        key = (folder / "host_key.pub").read_text().split()
        with self.known_hosts.open("a") as fh:
            fh.write(f"[{address}]:{PORT} {key[0]} {key[1]}\n")
        with self.config.open("a") as fh:
            fh.write(f"Host {name}\n  HostName {address}\n  Port {PORT}\n  User {user}\n  IdentityFile {self.key}\n"
                     f"  UserKnownHostsFile {self.known_hosts}\n  StrictHostKeyChecking yes\n  BatchMode yes\n")
        self.hosts[name] = SshHost(name, address, folder).start()
        return self.hosts[name]

    def stop(self) -> None:
        for host in self.hosts.values():
            host.stop()
        for home in (self.home, *self.homes.values()):
            shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def user_folder(self, *parts: str, user: str = USER) -> Path:
        """A folder ``user`` owns (created)."""
        if user == USER:
            base = self.home
        elif user not in self.homes:
            base = self.homes[user] = Path(pwd.getpwnam(user).pw_dir) / self.home.name
            run("mkdir", "-p", str(base), user=user)
        else:
            base = self.homes[user]
        path = base.joinpath(*parts)
        run("mkdir", "-p", str(path), user=user)
        return path


def make_lab() -> SshLab:
    """An empty lab: a client key, and a home folder for the build user's files."""
    root = Path(tempfile.mkdtemp(prefix="ka-ssh-"))
    user_home = Path(pwd.getpwnam(USER).pw_dir)
    home = user_home / f"ka-test-{os.getpid()}"
    run("mkdir", "-p", str(home), user=USER)
    lab = SshLab(root, home)
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kernel-agent tests", "-f", str(lab.key))
    (root / "authorized_keys").write_text((root / "id_ed25519.pub").read_text())
    root.chmod(0o755)  # sshd (and the build user's session) read authorized_keys
    return lab


class Tripwire:
    """A host in the ssh config that nothing may connect to: a loopback listener counting connections."""

    def __init__(self, name: str = "tripwire") -> None:
        self.name = name
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def config(self) -> str:
        """Its ssh_config block."""
        return f"Host {self.name}\n  HostName 127.0.0.1\n  Port {self.port}\n  User {USER}\n  BatchMode yes\n"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
