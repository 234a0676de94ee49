"""The ssh door (ka/io/ssh.py) against real sshd hosts on loopback."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from ka.errors import KaError
from ka.io.ssh import Completed, HostKeyRefused, RemoteFailed, SshError, SshSettings, Unreachable, connect
from tests.support.sshhosts import SshLab


def settings(lab: SshLab, **kw: object) -> SshSettings:
    return SshSettings(config=lab.config, known_hosts=lab.known_hosts, **kw)  # type: ignore[arg-type]


def test_commands_are_argument_lists_never_shell_text(ssh_lab: SshLab) -> None:
    with connect(settings(ssh_lab), "boltzmann") as remote:
        assert remote.run(["id", "-un"]).output.strip() == "kabuild"
        tricky = ["a b", "'$HOME'", ";rm -rf ~", "$(id)", "`id`", "*", "\"q\""]
        out = remote.run(["printf", "%s|", *tricky]).output
        assert out == "|".join(tricky) + "|"
        cwd = str(ssh_lab.user_folder("cwd test"))
        assert remote.run(["pwd"], cwd=cwd).output.strip() == cwd
        assert remote.run(["printenv", "KA_X"], env={"KA_X": "a b;c"}).output == "a b;c\n"


def test_output_streams_line_by_line_and_failures_carry_the_tail(ssh_lab: SshLab) -> None:
    seen: list[tuple[float, str]] = []
    start = time.monotonic()
    with connect(settings(ssh_lab), "fermi") as remote:
        remote.run(["sh", "-c", "echo one; sleep 1; echo two"], on_line=lambda ln: seen.append(
            (time.monotonic() - start, ln)))
        assert [ln for _, ln in seen] == ["one", "two"] and seen[1][0] - seen[0][0] > 0.5
        with pytest.raises(RemoteFailed, match=r"fermi: sh -c .* exited 3: first \| last words") as err:
            remote.run(["sh", "-c", "echo first; echo last words >&2; exit 3"])
        assert err.value.code == 3
        with pytest.raises(RemoteFailed, match="exited 124"):
            remote.run(["sleep", "30"], timeout=1)


def test_files_over_sftp(ssh_lab: SshLab, tmp_path: Path) -> None:
    local = tmp_path / "tree"
    (local / "sub").mkdir(parents=True)
    (local / "sub" / "a.txt").write_text("a")
    (local / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (local / "run.sh").chmod(0o755)
    remote_dir = str(ssh_lab.user_folder("sftp")) + "/tree"
    with connect(settings(ssh_lab), "hertz") as remote:
        assert remote.put_tree(local, remote_dir) == 1 + len("#!/bin/sh\necho ran\n")
        assert remote.run(["./run.sh"], cwd=remote_dir).output == "ran\n"
        data, size, mtime = remote.read(remote_dir + "/sub/a.txt", limit=10)
        assert (data, size) == (b"a", 1) and mtime > 0
        remote.get(remote_dir + "/sub/a.txt", tmp_path / "back")
        assert (tmp_path / "back").read_text() == "a"
        assert remote.stat(remote_dir + "/none") is None
        # what a pull request's build leaves is fetched only as a regular file of bounded size
        remote.run(["ln", "-s", "/dev/zero", remote_dir + "/zero.pkg.tar.zst"])
        with pytest.raises(SshError, match=r"zero\.pkg\.tar\.zst: not a regular file; not fetched"):
            remote.get(remote_dir + "/zero.pkg.tar.zst", tmp_path / "zero")
        remote.run(["sh", "-c", f"head -c 5000 /dev/zero > {remote_dir}/big"])
        with pytest.raises(SshError, match="big: over 4096 bytes; not fetched"):
            remote.get(remote_dir + "/big", tmp_path / "big", limit=4096)
        remote.run(["chmod", "000", remote_dir + "/sub/a.txt"])
        with pytest.raises(SshError, match=r"a\.txt: Permission denied"):  # as an SshError, like a missing file
            remote.read(remote_dir + "/sub/a.txt", limit=10)


def test_unknown_and_changed_host_keys_are_refused(ssh_lab: SshLab, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    address = ssh_lab.hosts["boltzmann"].address
    unknown = rf"boltzmann \(\[{re.escape(address)}\]:2222\): host key ssh-ed25519 SHA256:\S+ is not in"
    with pytest.raises(HostKeyRefused, match=unknown):
        connect(SshSettings(config=ssh_lab.config, known_hosts=empty), "boltzmann")
    wrong = tmp_path / "wrong"
    fermi_key = (ssh_lab.root / "fermi" / "host_key.pub").read_text().split()
    wrong.write_text(f"[{address}]:2222 {fermi_key[0]} {fermi_key[1]}\n")  # boltzmann's address, fermi's key
    with pytest.raises(HostKeyRefused, match=r"host key changed: it offers SHA256:.*pins SHA256:"):
        connect(SshSettings(config=ssh_lab.config, known_hosts=wrong), "boltzmann")
    assert address not in empty.read_text()  # refused, never added


def test_a_host_that_is_down_is_unreachable(ssh_lab: SshLab) -> None:
    host = ssh_lab.hosts["fermi"]
    host.stop()
    try:
        with pytest.raises(Unreachable, match=rf"^fermi: {re.escape(host.address)}:2222: .*; from "
                                              rf"{re.escape(str(ssh_lab.config))}$"):  # the config that said where
            connect(settings(ssh_lab, connect_timeout=2.0), "fermi")
    finally:
        host.start()


def test_proxy_jump(ssh_lab: SshLab, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    fermi = ssh_lab.hosts["fermi"].address
    config.write_text(ssh_lab.config.read_text() + f"Host behind\n  HostName {fermi}\n  Port 2222\n"
                      f"  User kabuild\n  IdentityFile {ssh_lab.key}\n  ProxyJump boltzmann\n")
    with connect(SshSettings(config=config, known_hosts=ssh_lab.known_hosts), "behind") as remote:
        assert remote.run(["id", "-un"]).output.strip() == "kabuild"


def test_a_connection_dropped_under_a_command_is_unreachable_never_a_raw_error(ssh_lab: SshLab) -> None:
    """A host that reboots takes the connection with it, at any moment: before a command (the transport knows),
    or while a channel opens (paramiko raises EOFError then). Both are Unreachable, a KaError every caller
    handles; the EOFError once escaped a rollback's reboot and crashed the CLI."""
    seen = set()
    for delay in (0.0, 0.0, 0.001, 0.002, 0.005, 0.01) * 3:
        with connect(settings(ssh_lab), "boltzmann") as remote:
            assert remote.run(["true"]).ok
            transport = remote.client.get_transport()
            assert transport is not None
            transport.sock.shutdown(socket.SHUT_RDWR)  # the connection goes, as with a host that reboots
            time.sleep(delay)
            with pytest.raises(Unreachable) as err:
                remote.run(["true"])
            assert isinstance(err.value, KaError)
            seen.add(str(err.value).split(": ", 1)[1].split(" (")[0])
    assert seen <= {"the connection is gone", "the connection was lost"}, seen


def test_a_connection_dropped_under_sftp_is_unreachable_and_closes_quietly(ssh_lab: SshLab, tmp_path: Path) -> None:
    """A transfer cut by a host that reboots says Unreachable (paramiko's bare EOFError, once seen as
    "ampere: EOFError:"), and closing that connection afterwards is no error (its SFTP channel cannot tell
    the dead peer it closes: paramiko raised EOFError from close() in a rollback's reboot)."""
    local = tmp_path / "big"
    local.write_bytes(b"x" * (8 << 20))
    remote = connect(settings(ssh_lab), "boltzmann")
    sftp = remote.sftp
    assert sftp.normalize(".")
    transport = remote.client.get_transport()
    assert transport is not None
    transport.sock.shutdown(socket.SHUT_RDWR)
    with pytest.raises(Unreachable):
        sftp.put(str(local), "big")
    remote.close()  # no EOFError


def test_a_held_command_has_exited_when_close_returns(ssh_lab: SshLab) -> None:
    """A build slot's flock must be free once ka-build released it: a CI run's next step found the build
    host's folder still busy (umount) because close returned while the command was still ending."""
    done = ssh_lab.user_folder("held") / "done"
    with connect(settings(ssh_lab), "boltzmann") as remote:
        held = remote.hold(["sh", "-c", f"cat; sleep 1; touch {done}"], "ready")
        assert not isinstance(held, Completed)
        held.close()
        assert done.exists()
