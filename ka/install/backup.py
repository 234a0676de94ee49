"""Backups of the kernel an install replaces, on the backup host, verified where they lie.

``<backup root>/<host>/<replaced release>/`` holds::

    boot/…                 the kernel image, the initramfs, dtbs/ (paths inside the boot folder)
    extlinux.conf          the bootloader config, as it was
    modules-<release>.tar  the replaced kernel's modules
    package.txt            pacman's entry for the kernel package (name, version)
    backup.json            what was where on the host, and what replaced it
    SHA256SUMS             every file above; ``sha256sum -c`` must pass on the backup host

The files are read on the host as root (``tar -c``), checked against the host's own sha256
sums, uploaded into a fresh folder, verified there, and only then moved to their name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import posixpath
import re
import shutil
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ka.errors import EXIT_ENVIRONMENT, KaError
from ka.fleet.infra import Folder
from ka.install.device import Device
from ka.io.ssh import Remote, RemoteFailed

Log = Callable[[str], None]
SUMS = "SHA256SUMS"


class BackupError(KaError):
    """The backup could not be made or does not verify: nothing on the host was changed."""

    exit_code = EXIT_ENVIRONMENT


@dataclass(frozen=True)
class Contents:
    """What is backed up, as paths on the host."""

    boot: str
    boot_files: tuple[str, ...]  # files and folders inside the boot folder (image, initramfs, dtbs)
    extlinux: str
    modules: str | None  # the replaced release's modules folder


def folder(backup: Folder, host: str, release: str) -> str:
    """``<root>/<host>/<release>`` on the backup host."""
    return posixpath.join(backup.path, host, release)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _tar_digests(path: Path) -> dict[str, str]:
    """sha256 of every regular file in a tar, by member name."""
    found = {}
    with tarfile.open(path) as tar:
        for info in tar:
            if info.isfile():
                fh = tar.extractfile(info)
                assert fh is not None
                digest = hashlib.sha256()
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
                found[info.name] = digest.hexdigest()
    return found


def commands(device: Device, contents: Contents) -> list[list[str]]:
    """The commands run on the host to read the backup (for ``--dry-run``)."""
    spec = device.spec
    rel = [posixpath.relpath(p, contents.boot) for p in contents.boot_files]
    argv = [spec.root("tar", "-cf", "-", "-C", contents.boot, "--", *rel),
            spec.root("cat", "--", contents.extlinux)]
    if contents.modules:
        argv.append(spec.root("tar", "-cf", "-", "-C", posixpath.dirname(contents.modules), "--",
                              posixpath.basename(contents.modules)))
    argv.append(spec.root("find", *contents.boot_files, contents.extlinux, *([contents.modules] if contents.modules
                                                                             else []),
                          "-type", "f", "-exec", "sha256sum", "--", "{}", "+"))
    return argv


def extract_data(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract as tarfile's "data" filter does: nothing outside ``dest``, no device, no set-uid bit.
    Debian 12's Python (3.11.2) predates the filters, so there the members are checked here first."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    members = tar.getmembers()
    for m in members:
        inside = not m.name.startswith("/") and not posixpath.normpath(m.name).startswith("..")
        target = posixpath.normpath(posixpath.join(posixpath.dirname(m.name), m.linkname)) if m.issym() else (
            posixpath.normpath(m.linkname) if m.islnk() else "")
        if not inside or not (m.isfile() or m.isdir() or m.issym() or m.islnk()) or target.startswith(("/", "..")):
            raise BackupError(f"{m.name}: not a file of the boot folder (a device, or a path or link that leaves "
                              "it); nothing was changed")
        m.mode &= 0o777  # no set-uid, set-gid or sticky bit
    tar.extractall(dest, members=members)  # noqa: S202 - every member checked above


def collect(device: Device, contents: Contents, stage: Path, record: dict[str, Any], package: str | None,
            log: Log) -> None:
    """Read the files from the host into ``stage`` and check them against the host's sums."""
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "boot").mkdir(parents=True)
    cmds = commands(device, contents)
    boot_tar = stage.parent / (stage.name + ".boot.tar")
    with boot_tar.open("wb") as fh:
        device.remote.stream(cmds[0], fh, timeout=1800)
    extra = [contents.modules] if contents.modules else []
    host_sums = device.sums([*contents.boot_files, contents.extlinux, *extra])
    got = _tar_digests(boot_tar)
    for name, digest in got.items():
        path = posixpath.normpath(posixpath.join(contents.boot, name))
        if host_sums.get(path) != digest:
            raise BackupError(f"{device.name}:{path}: the copy's sha256 is not the host's; nothing was changed")
    with tarfile.open(boot_tar) as tar:
        extract_data(tar, stage / "boot")
    boot_tar.unlink()
    (stage / "extlinux.conf").write_bytes(device.read(contents.extlinux, 1 << 20))
    if host_sums.get(contents.extlinux) != _sha256(stage / "extlinux.conf"):
        raise BackupError(f"{device.name}:{contents.extlinux}: changed while it was read; nothing was changed")
    if contents.modules:
        tar_path = stage / f"modules-{posixpath.basename(contents.modules)}.tar"
        with tar_path.open("wb") as fh:
            device.remote.stream(cmds[2], fh, timeout=1800)
        base = posixpath.dirname(contents.modules)
        for name, digest in _tar_digests(tar_path).items():
            if host_sums.get(posixpath.join(base, name)) != digest:
                raise BackupError(f"{device.name}:{base}/{name}: the copy's sha256 is not the host's; nothing was "
                                  "changed")
    if package:
        (stage / "package.txt").write_text(package + "\n")
    (stage / "backup.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    files = sorted(p for p in stage.rglob("*") if p.is_file() and p.name != SUMS)
    (stage / SUMS).write_text("".join(f"{_sha256(p)}  {p.relative_to(stage).as_posix()}\n" for p in files))
    log(f"read {len(files)} files from {device.name}, each checked against its sha256 there")


def store(remote: Remote, backup: Folder, host: str, release: str, stage: Path, log: Log) -> str:
    """Upload ``stage``, verify it on the backup host, then give it its name; the final path."""
    final = folder(backup, host, release)
    incoming = posixpath.join(backup.path, host, f".incoming-{release}")
    remote.run(["rm", "-rf", "--", incoming], timeout=600)
    try:
        sent = remote.put_tree(stage, incoming)
    except (OSError, KaError) as exc:
        remote.run(["rm", "-rf", "--", incoming], timeout=600, check=False)
        raise _upload_failed(remote, backup, host, release, stage, exc) from None
    try:
        remote.run(["sha256sum", "--quiet", "--strict", "-c", SUMS], cwd=incoming, timeout=1800)
    except RemoteFailed as exc:
        raise BackupError(f"{backup.ssh}:{incoming}: the backup does not verify there (sha256sum -c: {exc.tail}); "
                          "nothing on the host was changed") from None
    if remote.stat(final) is not None:
        for there in _backups_of(remote, backup, host, release):
            if _same(remote, there, stage):
                remote.run(["rm", "-rf", "--", incoming], timeout=600)
                log(f"backup of {release}: {backup.ssh}:{there} already holds these files (same sha256 sums); kept")
                return there
        # another backup of this release (an initramfs made again, or one made with its modules missing): it
        # goes beside the one that has the name, never over it, so --rollback RELEASE gets the first one
        final = f"{final}.{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        log(f"an earlier, different backup of {release} keeps its name; this one goes beside it")
    remote.run(["mv", "-T", "--", incoming, final], timeout=60)
    log(f"backup of {release}: {sent} bytes in {backup.ssh}:{final}, verified there (sha256sum -c)")
    return final


def _upload_failed(remote: Remote, backup: Folder, host: str, release: str, stage: Path, exc: BaseException
                   ) -> BackupError:
    """Why the upload failed, in the backup host's terms: most often it is full."""
    need = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file())
    free = remote.free(backup.path)
    if free is not None and free < need:
        return BackupError(f"the backup host {backup.ssh} is full: {free >> 10} KiB free in {backup.path}, the "
                           f"backup of {release} needs {need >> 10} KiB; the partial upload was removed, nothing on "
                           f"{host} was changed; make room there (older backups: {backup.path}/{host}/) and install "
                           "again")
    return BackupError(f"{backup.ssh}: the backup upload into {backup.path}/{host} failed ({type(exc).__name__}: "
                       f"{exc}); the partial upload was removed, nothing on {host} was changed")


def _backups_of(remote: Remote, backup: Folder, host: str, release: str) -> list[str]:
    """The backups of ``release`` of ``host``: the one that has its name first, then those kept beside it."""
    names = remote.listdir(posixpath.join(backup.path, host))
    return [folder(backup, host, n) for n in sorted(names, key=lambda n: (n != release, n))
            if n == release or re.fullmatch(re.escape(release) + r"\.\d{8}T\d{6}Z", n)]


def _same(remote: Remote, folder: str, stage: Path) -> bool:
    """The backup in ``folder`` holds the same files as ``stage`` (its record aside)."""
    def files(text: str) -> set[str]:
        return {ln for ln in text.splitlines() if not ln.endswith("  backup.json")}
    try:
        there = remote.read(posixpath.join(folder, SUMS), 16 << 20)[0].decode("utf-8", "replace")
    except KaError:
        return False
    return files(there) == files((stage / SUMS).read_text())


def fetch(remote: Remote, backup: Folder, host: str, release: str, stage: Path, log: Log) -> dict[str, Any]:
    """Verify a backup on the backup host, download it into ``stage``, verify it again here; its record."""
    where = folder(backup, host, release)
    if remote.stat(posixpath.join(where, SUMS)) is None:
        known = []
        with contextlib.suppress(OSError):
            known = [n for n in remote.listdir(posixpath.join(backup.path, host)) if not n.startswith(".")]
        raise BackupError(f"{backup.ssh}:{where}: no backup of {release}; backups of {host}: "
                          f"{', '.join(known) or 'none'}", )
    try:
        remote.run(["sha256sum", "--quiet", "--strict", "-c", SUMS], cwd=where, timeout=1800)
    except RemoteFailed as exc:
        raise BackupError(f"{backup.ssh}:{where}: the backup does not verify (sha256sum -c: {exc.tail})") from None
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    sums = remote.read(posixpath.join(where, SUMS), 16 << 20)[0].decode()
    for line in sums.splitlines():
        digest, _, name = line.partition("  ")
        if not name or name.startswith("/") or ".." in name.split("/"):
            raise BackupError(f"{backup.ssh}:{where}/{SUMS}: {name!r} is not a path inside the backup")
        local = stage / name
        local.parent.mkdir(parents=True, exist_ok=True)
        remote.get(posixpath.join(where, name), local)
        if _sha256(local) != digest:
            raise BackupError(f"{backup.ssh}:{where}/{name}: the download's sha256 is not the manifest's")
    log(f"backup {backup.ssh}:{where} verified there and here")
    record = json.loads((stage / "backup.json").read_text())
    return record if isinstance(record, dict) else {}
