"""The one door for remote commands: ssh (paramiko) with pinned host keys, argument lists, SFTP.

Connection details come from an ssh_config file (HostName, Port, User, IdentityFile, and one
level of ProxyJump), host keys from a known_hosts file: an unknown or changed host key is
refused, naming the host and the key's fingerprint, never added.  Remote commands are argument
lists joined with :func:`shlex.join`; nothing from a manifest or a comment reaches a remote
shell unquoted.  One connection per job and host: open a :class:`Remote`, use it, close it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import os
import posixpath
import shlex
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

import paramiko

from ka.errors import EXIT_ENVIRONMENT, KaError

log = logging.getLogger(__name__)
# paramiko logs a traceback at ERROR for every connection that closes before its banner: a host that
# reboots (or a NAT that accepts for it) does that for a minute, and ka reports failed connections itself
logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)
CONNECT_TIMEOUT = 10.0


class SshError(KaError):
    """An ssh problem; the message names the host."""

    exit_code = EXIT_ENVIRONMENT


class Unreachable(SshError):
    """The host could not be reached: refused, timed out, handshake or authentication failed."""


class HostKeyRefused(Unreachable):
    """The host's key is not the one pinned in known_hosts (or none is)."""


class RemoteFailed(SshError):
    """A remote command exited non-zero (or ran past its time)."""

    def __init__(self, host: str, argv: Sequence[str], code: int, tail: str) -> None:
        super().__init__(f"{host}: {shlex.join(argv[:6])}{' …' if len(argv) > 6 else ''} exited {code}"
                         + (f": {tail}" if tail else ""))
        self.argv = list(argv)
        self.code = code
        self.tail = tail


def fingerprint(key: paramiko.PKey) -> str:
    """The key's fingerprint as OpenSSH prints it (``SHA256:…``)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class Target:
    """Where an ssh name leads, from the ssh_config file."""

    name: str
    hostname: str
    port: int = 22
    user: str | None = None
    identity_files: tuple[str, ...] = ()
    proxy_jump: str | None = None


@dataclass(frozen=True)
class SshSettings:
    """The ssh_config and known_hosts files, resolved once (``KA_SSH_CONFIG``, ``KA_KNOWN_HOSTS``)."""

    config: Path = field(default_factory=lambda: Path.home() / ".ssh" / "config")
    known_hosts: Path = field(default_factory=lambda: Path.home() / ".ssh" / "known_hosts")
    connect_timeout: float = CONNECT_TIMEOUT
    #: ``ka host add --accept-key``: a host key not yet in known_hosts with exactly this fingerprint
    #: (``SHA256:…``) is pinned there; any other stays refused
    accept_key: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str], config: str | None = None,
                 known_hosts: str | None = None) -> SshSettings:
        home = Path(environ.get("HOME") or Path.home())
        return cls(config=Path(config or environ.get("KA_SSH_CONFIG") or home / ".ssh" / "config"),
                   known_hosts=Path(known_hosts or environ.get("KA_KNOWN_HOSTS") or home / ".ssh" / "known_hosts"))

    def explain(self, name: str) -> str:
        """Which ssh config said where ``name`` is, or why none did, and what to add: for a message about a
        host that could not be reached."""
        add = f"add 'Host {name}' with its HostName, User and IdentityFile"
        if not self.config.is_file():
            return f"no ssh config: {self.config} does not exist (KA_SSH_CONFIG names another); {add} there"
        try:
            found = paramiko.SSHConfig.from_path(str(self.config)).lookup(name)
        except (OSError, paramiko.SSHException) as exc:
            return f"{self.config}: cannot read the ssh config: {exc}"
        if set(found) <= {"hostname"} and found.get("hostname", name) == name:
            return f"{self.config} has no 'Host {name}'; {add}"
        return f"from {self.config}"

    def target(self, name: str) -> Target:
        """Resolve an ssh name through the config file (a missing file means: the name is the host)."""
        found: dict[str, Any] = {"hostname": name}
        if self.config.is_file():
            try:
                found = paramiko.SSHConfig.from_path(str(self.config)).lookup(name)
            except (OSError, paramiko.SSHException) as exc:
                raise SshError(f"{self.config}: cannot read the ssh config: {exc}") from None
        files = tuple(os.path.expanduser(f) for f in found.get("identityfile", []))
        return Target(name=name, hostname=str(found.get("hostname", name)), port=int(found.get("port", 22)),
                      user=found.get("user"), identity_files=files, proxy_jump=found.get("proxyjump"))


class _Refuse(paramiko.MissingHostKeyPolicy):
    """An unknown host key is refused, with the fingerprint the user would need to check; unless it is the one
    the user checked and named (``accept``): then it is pinned in known_hosts."""

    def __init__(self, name: str, known_hosts: Path, accept: str | None = None) -> None:
        self.name, self.known_hosts, self.accept = name, known_hosts, accept

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if self.accept is not None and fingerprint(key) == self.accept:
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
            with open(self.known_hosts, "a", encoding="utf-8") as fh:
                fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
            client.get_host_keys().add(hostname, key.get_name(), key)
            return
        raise HostKeyRefused(f"{self.name} ({hostname}): host key {key.get_name()} {fingerprint(key)} is not in "
                             f"{self.known_hosts}; check it and add it there (ssh-keyscan), it is never added "
                             "on its own")


@dataclass
class Completed:
    """A finished remote command."""

    argv: tuple[str, ...]
    code: int
    output: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.code == 0


class Held:
    """A command left running on a host (:meth:`Remote.hold`), until :meth:`close`."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self._channel = channel

    def close(self, timeout: float = 30.0) -> None:
        """End the command: its standard input reaches its end, and once it has exited (within ``timeout``;
        at once when the connection is gone) the channel closes.  Returning only then means that what it
        held is free: the build slot's lock is released before the next ka-build may look for it."""
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self._channel.shutdown_write()
            self._channel.status_event.wait(timeout)
        self._channel.close()


class Remote:
    """One ssh connection to one host, for one job: commands, SFTP, closed when done."""

    def __init__(self, settings: SshSettings, name: str, role: str = "") -> None:
        self.settings, self.name, self.role = settings, name, role or name
        self.target = settings.target(name)
        self._jump: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self.client = self._connect()

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def alive(self) -> bool:
        """The connection is still up (as far as the transport knows)."""
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()

    def close(self) -> None:
        """Close the connection (and a jump host's).  Closing one that already went away (a host that reboots
        under it) is done, not an error: paramiko says EOFError when it tries to tell the dead peer."""
        for thing in (self._sftp, self.client, self._jump):
            if thing is not None:
                with contextlib.suppress(EOFError, OSError, paramiko.SSHException):
                    thing.close()

    def free(self, path: str) -> int | None:
        """Bytes free for new files (of this user) in the file system of ``path``; None when it cannot be told."""
        res = self.run(["stat", "-f", "-c", "%a %S", "--", path], timeout=60, check=False)
        words = res.output.split()
        return int(words[0]) * int(words[1]) if res.ok and len(words) == 2 and all(map(str.isdigit, words)) else None

    def _client(self, target: Target) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        if self.settings.known_hosts.is_file():
            client.load_host_keys(str(self.settings.known_hosts))
        client.set_missing_host_key_policy(_Refuse(target.name, self.settings.known_hosts, self.settings.accept_key))
        return client

    def _connect(self) -> paramiko.SSHClient:
        sock = self._jump_channel() if self.target.proxy_jump else None
        return self._open(self.target, sock)

    def _open(self, target: Target, sock: Any = None) -> paramiko.SSHClient:
        client = self._client(target)
        timeout = self.settings.connect_timeout
        try:
            client.connect(target.hostname, port=target.port, username=target.user,
                           key_filename=list(target.identity_files) or None, timeout=timeout,
                           banner_timeout=timeout, auth_timeout=timeout, channel_timeout=timeout,
                           look_for_keys=not target.identity_files, allow_agent=not target.identity_files, sock=sock)
        except HostKeyRefused:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyRefused(f"{target.name} ({exc.hostname}): host key changed: it offers "
                                 f"{fingerprint(exc.key)}, {self.settings.known_hosts} pins "
                                 f"{fingerprint(exc.expected_key)}; refused") from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            client.close()
            why = str(exc) or type(exc).__name__
            role = self.role if target.name == self.name else target.name  # a jump host is named as itself
            raise Unreachable(f"{role}: {target.hostname}:{target.port}: {why}; "
                              f"{self.settings.explain(target.name)}") from None
        return client

    def _jump_channel(self) -> Any:
        """A channel through the ProxyJump host (one level, as paramiko can)."""
        hop = self.target.proxy_jump.split(",")[0].strip() if self.target.proxy_jump else ""
        user, _, host = hop.rpartition("@")
        host, _, port = host.partition(":")
        jump = self.settings.target(host)
        jump = Target(jump.name, jump.hostname, int(port or jump.port), user or jump.user, jump.identity_files)
        self._jump = self._open(jump)
        transport = self._jump.get_transport()
        assert transport is not None
        try:
            return transport.open_channel("direct-tcpip", (self.target.hostname, self.target.port), ("127.0.0.1", 0),
                                          timeout=self.settings.connect_timeout)
        except (paramiko.SSHException, OSError) as exc:
            raise Unreachable(f"{self.name}: through {hop}: {exc}") from None

    # --- commands ---------------------------------------------------------------------------

    def run(self, argv: Sequence[str], *, cwd: str | None = None, env: Mapping[str, str] | None = None,
            timeout: float = 600.0, check: bool = True, on_line: Callable[[str], None] | None = None) -> Completed:
        """Run ``argv`` on the host (through ``env -C cwd VAR=… argv``: no shell), its output streamed.

        ``timeout`` bounds the whole command: past it the command is killed (``timeout`` runs it).
        """
        full = ["timeout", "--kill-after=10", str(max(1, int(timeout)))]
        if cwd or env:
            full += ["env", *(["-C", cwd] if cwd else []), *(f"{k}={v}" for k, v in (env or {}).items())]
        full += list(argv)
        start = time.monotonic()
        output = self._exec(full, timeout + 15, on_line)
        code, text = output
        result = Completed(tuple(argv), code, text, time.monotonic() - start)
        log.debug("%s: ran %s -> %d in %.2fs", self.name, shlex.join(list(argv)[:6]), code, result.seconds)
        if check and not result.ok:
            tail = " | ".join(text.strip().splitlines()[-3:])
            raise RemoteFailed(self.name, list(argv), 124 if code == 124 else code, tail[-500:])
        return result

    def _session(self, argv: list[str], combine: bool) -> paramiko.Channel:
        """A new channel running ``argv``; a connection that is gone, or goes while the channel opens (a host
        rebooting under us: paramiko says EOFError then), is :class:`Unreachable`, never a raw exception."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise Unreachable(f"{self.name}: the connection is gone")
        try:
            channel = transport.open_session(timeout=self.settings.connect_timeout)
            channel.set_combine_stderr(combine)
            channel.settimeout(1.0)
            channel.exec_command(shlex.join(argv))
        except (EOFError, OSError, paramiko.SSHException) as exc:
            raise lost(self.name, exc) from None
        return channel

    def _exec(self, full: list[str], deadline_s: float, on_line: Callable[[str], None] | None) -> tuple[int, str]:
        channel = self._session(full, combine=True)
        deadline = time.monotonic() + deadline_s
        chunks: list[bytes] = []
        pending = b""
        while True:
            try:
                data = channel.recv(65536)
            except TimeoutError:
                if time.monotonic() > deadline:
                    channel.close()
                    return 124, b"".join(chunks).decode("utf-8", "replace")
                continue
            if not data:
                break
            chunks.append(data)
            if on_line:
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    on_line(line.decode("utf-8", "replace").rstrip("\r"))
        if on_line and pending:
            on_line(pending.decode("utf-8", "replace"))
        code = channel.recv_exit_status()
        channel.close()
        return code, b"".join(chunks).decode("utf-8", "replace")

    def hold(self, argv: Sequence[str], echo: str, timeout: float = 60.0) -> Held | Completed:
        """Start ``argv``, a command that copies its input to its output (``cat``, under ``flock`` say), and
        keep it running: :class:`Held` once ``echo``, sent to it, comes back (so it runs), or, when it ends
        first, how it ended.  Closing the :class:`Held` ends the command (its standard input closes)."""
        channel = self._session(list(argv), combine=True)
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):  # it ended already: read how
            channel.sendall(echo.encode() + b"\n")
        deadline, seen, start = time.monotonic() + timeout, b"", time.monotonic()
        while echo.encode() + b"\n" not in seen:
            try:
                data = channel.recv(4096)
            except TimeoutError:
                if time.monotonic() > deadline:
                    channel.close()
                    raise RemoteFailed(self.name, list(argv), 124, seen.decode("utf-8", "replace")[-300:]) from None
                continue
            if not data:
                code = channel.recv_exit_status()
                channel.close()
                return Completed(tuple(argv), code, seen.decode("utf-8", "replace"), time.monotonic() - start)
            seen += data
        return Held(channel)

    def stream(self, argv: Sequence[str], sink: BinaryIO, *, timeout: float = 600.0, limit: int | None = None) -> int:
        """Run ``argv`` and write its standard output, as bytes, to ``sink``; bytes written.

        For what is not text (``tar -c``, a file only root may read): standard error is kept
        apart and reported when the command fails (:class:`RemoteFailed`); more than ``limit``
        bytes fail too.
        """
        full = ["timeout", "--kill-after=10", str(max(1, int(timeout))), *argv]
        channel = self._session(full, combine=False)
        deadline, written, errors = time.monotonic() + timeout + 15, 0, b""
        while True:
            try:
                data = channel.recv(1 << 20)
            except TimeoutError:
                if time.monotonic() > deadline:
                    channel.close()
                    raise RemoteFailed(self.name, list(argv), 124, "ran past its time") from None
                continue
            while channel.recv_stderr_ready():
                errors = (errors + channel.recv_stderr(65536))[-4000:]
            if not data:
                break
            written += len(data)
            if limit is not None and written > limit:
                channel.close()
                raise SshError(f"{self.name}: {shlex.join(list(argv)[:6])} printed more than {limit} bytes")
            sink.write(data)
        code = channel.recv_exit_status()
        while channel.recv_stderr_ready():
            errors = (errors + channel.recv_stderr(65536))[-4000:]
        channel.close()
        if code != 0:
            tail = " | ".join(errors.decode("utf-8", "replace").strip().splitlines()[-3:])
            raise RemoteFailed(self.name, list(argv), code, tail[-500:])
        return written

    def output(self, argv: Sequence[str], *, timeout: float = 120.0, limit: int = 16 << 20) -> bytes:
        """The standard output of ``argv`` as bytes (at most ``limit``); :class:`RemoteFailed` on failure."""
        buf = io.BytesIO()
        self.stream(argv, buf, timeout=timeout, limit=limit)
        return buf.getvalue()

    # --- files ------------------------------------------------------------------------------

    @property
    def sftp(self) -> paramiko.SFTPClient:
        """The connection's SFTP session (opened once), every call of which turns a connection that went away
        (paramiko's EOFError mid-transfer) into :class:`Unreachable`."""
        if self._sftp is None:
            try:
                self._sftp = self.client.open_sftp()
            except (EOFError, OSError, paramiko.SSHException) as exc:
                raise lost(self.name, exc) from None
        return cast(paramiko.SFTPClient, _Guarded(self._sftp, self))

    def home(self) -> str:
        """The remote user's home (relative remote paths are taken from it)."""
        return self.sftp.normalize(".")

    def put_tree(self, local: Path, remote: str) -> int:
        """Copy a local folder (files, folders; modes kept) to ``remote``; bytes sent."""
        sent = 0
        self.mkdirs(remote)
        for path in sorted(local.rglob("*")):
            target = posixpath.join(remote, path.relative_to(local).as_posix())
            if path.is_dir():
                self.mkdirs(target)
            else:
                self.sftp.put(str(path), target)
                self.sftp.chmod(target, stat.S_IMODE(path.stat().st_mode))
                sent += path.stat().st_size
        return sent

    def mkdirs(self, remote: str) -> None:
        """``mkdir -p`` over SFTP."""
        parts = remote.rstrip("/").split("/")
        for i in range(1, len(parts) + 1):
            path = "/".join(parts[:i]) or "/"
            if not path or path == "/":
                continue
            try:
                self.sftp.stat(path)
            except FileNotFoundError:
                self.sftp.mkdir(path)

    def get(self, remote: str, local: Path, limit: int = 4 << 30) -> None:
        """Fetch one regular file of at most ``limit`` bytes (a link to ``/dev/zero`` never fills the disk)."""
        try:
            if not stat.S_ISREG(self.sftp.lstat(remote).st_mode or 0):
                raise SshError(f"{self.name}:{remote}: not a regular file; not fetched")
            with self.sftp.open(remote, "rb") as src, open(local, "wb") as dst:
                src.prefetch()
                copied = 0
                while chunk := src.read(1 << 20):
                    copied += len(chunk)
                    if copied > limit:
                        raise SshError(f"{self.name}:{remote}: over {limit} bytes; not fetched")
                    dst.write(chunk)
        except OSError as exc:
            raise SshError(f"{self.name}:{remote}: {exc.strerror or exc}") from None

    def read(self, remote: str, limit: int) -> tuple[bytes, int, int]:
        """A remote file's bytes (at most ``limit``, else :class:`SshError`), size and mtime."""
        try:
            st = self.sftp.stat(remote)
        except OSError as exc:
            raise SshError(f"{self.name}:{remote}: {exc.strerror or exc}") from None
        size = int(st.st_size or 0)
        if size > limit:
            raise SshError(f"{self.name}:{remote}: is {size} bytes; at most {limit} may be read")
        try:
            with self.sftp.open(remote, "rb") as fh:
                return fh.read(limit + 1)[:limit], size, int(st.st_mtime or 0)
        except OSError as exc:
            raise SshError(f"{self.name}:{remote}: {exc.strerror or exc}") from None

    def realpath(self, remote: str) -> str | None:
        """The absolute path of ``remote`` with every symlink resolved (by the host), or None when it is not there."""
        try:
            return self.sftp.normalize(remote)
        except OSError:
            return None

    def stat(self, remote: str) -> tuple[int, int] | None:
        """(size, mtime) of a remote file, or None when there is none."""
        try:
            st = self.sftp.stat(remote)
        except OSError:
            return None
        return int(st.st_size or 0), int(st.st_mtime or 0)

    def listdir(self, remote: str) -> list[str]:
        """Names in a remote folder."""
        return sorted(self.sftp.listdir(remote))


def lost(name: str, exc: BaseException, during: str = "") -> Unreachable:
    """A connection that went away under a command or a transfer, said once for all of them."""
    return Unreachable(f"{name}: the connection was lost{during} ({type(exc).__name__}"
                       f"{': ' + str(exc) if str(exc) else ''})")


class _Guarded:
    """An SFTP client or file whose calls say :class:`Unreachable` when the connection goes away under them;
    an error of the file itself (no such file, no room) stays the OSError it is."""

    def __init__(self, target: Any, remote: Remote) -> None:
        self._target, self._remote = target, remote

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._target, attr)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                out = value(*args, **kwargs)
            except (EOFError, paramiko.SSHException, OSError) as exc:
                if isinstance(exc, OSError) and self._remote.alive():
                    raise
                raise lost(self._remote.name, exc, f" during sftp {attr}") from None
            return _Guarded(out, self._remote) if isinstance(out, paramiko.SFTPFile) else out
        return call

    def __enter__(self) -> _Guarded:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(settings: SshSettings, name: str, role: str = "") -> Remote:
    """Open one connection to ``name`` (an ssh name); :class:`Unreachable` when it cannot be made, naming the host
    as ``role`` says (where the name comes from: :meth:`ka.fleet.infra.Infra.role`) and the ssh config read."""
    return Remote(settings, name, role)
