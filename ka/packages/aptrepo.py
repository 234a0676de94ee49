"""The apt repository of Debian hosts: reprepro on the repository host, signed with the fleet key.

Layout of ``apt_repository.path`` (reprepro's base folder)::

    conf/distributions     written once by ka-build: the distribution <name>, component main,
                           SignWith the key (reprepro signs Release/InRelease in that keyring)
    dists/ pool/ db/       reprepro's own
    ka/<file>.deb(.sig)    what ka-build published, with its detached signature: ka-install
                           fetches the package from here to check it before apt installs it
    ka/incoming/           an upload waits here until reprepro took it: a refused one never
                           replaces the published files

``reprepro includedeb`` runs under ``flock`` on the lock file beside it (as ``repo-add`` does for
pacman), so two publishes never interleave; afterwards ``reprepro list`` must name every package
at its version.  A package already there with other bytes under the same version is refused by
reprepro: a rebuild that differs needs a new ``package.pkgrel``.  Versions are compared as dpkg
compares them (:func:`compare_versions`).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from dataclasses import dataclass
from functools import cmp_to_key
from pathlib import Path

from ka.errors import EXIT_ENVIRONMENT, KaError
from ka.fleet.formats import DEB
from ka.fleet.infra import Repository
from ka.io.ssh import Remote, RemoteFailed, SshSettings, connect
from ka.packages.published import Log, Published, PublishError

PUBLISHED = "ka"  # the published packages and their signatures, beside reprepro's pool
LIST_FORMAT = "${package} ${version} ${$source} ${$architecture}\\n"
_DEB = re.compile(r"[a-z0-9][a-z0-9.+-]*_[A-Za-z0-9.+~:-]+_[a-z0-9]+\.deb")


class NotPublishedDeb(KaError):
    """The apt repository has no such package, or it cannot be fetched intact."""

    exit_code = EXIT_ENVIRONMENT


@dataclass(frozen=True)
class DebEntry:
    """One binary package of the distribution."""

    name: str
    version: str
    source: str
    arch: str

    @property
    def filename(self) -> str:
        return DEB.file_name(self.name, self.version.split(":", 1)[-1], self.arch)


def distributions(repo: Repository, arch: str) -> str:
    """reprepro's ``conf/distributions`` for the fleet's distribution."""
    return (f"Origin: kernel-agent\nLabel: {repo.name}\nCodename: {repo.name}\nSuite: {repo.name}\n"
            f"Architectures: {arch}\nComponents: main\nDescription: kernels built by kernel-agent\n"
            f"SignWith: {repo.key}\n")


def _reprepro(repo: Repository, *args: str) -> list[str]:
    return ["reprepro", "--silent", "-b", repo.path, *args]


def _env(repo: Repository) -> dict[str, str] | None:
    return {"GNUPGHOME": repo.gnupghome} if repo.gnupghome else None


def publish_deb(ssh: SshSettings, repo: Repository, packages: list[Path], arch: str, log: Log) -> Published:
    """Upload ``packages`` (and their ``.sig``), ``reprepro includedeb`` them, check the list names them."""
    with connect(ssh, repo.ssh, repo.role) as remote:
        published = posixpath.join(repo.path, PUBLISHED)
        remote.mkdirs(published)
        remote.mkdirs(posixpath.join(repo.path, "conf"))
        conf = posixpath.join(repo.path, "conf/distributions")
        if remote.stat(conf) is None:
            with remote.sftp.open(conf, "w") as fh:
                fh.write(distributions(repo, arch))
            log(f"wrote {repo.ssh}:{conf} (distribution {repo.name}, signed with {repo.key})")
        staged = posixpath.join(published, "incoming")
        remote.run(["rm", "-rf", "--", staged], timeout=120)
        remote.mkdirs(staged)
        names = [name for pkg in packages for name in (pkg.name, pkg.name + ".sig")]
        for pkg in packages:
            for path in (pkg, pkg.with_name(pkg.name + ".sig")):
                remote.sftp.put(str(path), posixpath.join(staged, path.name))
        log(f"uploaded {len(packages)} packages and their signatures to {repo.ssh}:{staged}")
        lock = posixpath.join(repo.path, ".ka-repo.lock")
        try:
            remote.run(["flock", lock, *_reprepro(repo, "includedeb", repo.name,
                                                  *(posixpath.join(staged, p.name) for p in packages))],
                       env=_env(repo), timeout=600, on_line=log)
        except RemoteFailed as exc:
            raise PublishError(f"reprepro did not take the packages on {repo.ssh}: {exc.tail or exc} (when it says "
                               "the same version is there with other bytes: raise package.pkgrel); the published "
                               "files are unchanged") from None
        remote.run(["mv", "-f", "--", *(posixpath.join(staged, n) for n in names), published], timeout=120)
        listed = entries(remote, repo)
    want = {_name_version(p.name) for p in packages}
    have = {(e.name, e.version) for e in listed}
    missing = sorted(f"{n} {v}" for n, v in want - have)
    if missing:
        raise PublishError(f"{repo.ssh}:{repo.path}: reprepro does not list {', '.join(missing)} after includedeb")
    log(f"{repo.name} lists {', '.join(f'{n} {v}' for n, v in sorted(want))}")
    return Published(repo.ssh, repo.path, f"dists/{repo.name}", repo.url,
                     tuple(sorted(f"{e.name}-{e.version}" for e in listed)))


def _name_version(filename: str) -> tuple[str, str]:
    name, version, _ = filename.removesuffix(DEB.extension).split("_")
    return name, version


def entries(remote: Remote, repo: Repository) -> list[DebEntry]:
    """Every binary package of the distribution (empty when the repository has none yet)."""
    if remote.stat(posixpath.join(repo.path, "conf/distributions")) is None:
        return []
    text = remote.run(_reprepro(repo, f"--list-format={LIST_FORMAT}", "list", repo.name), timeout=120).output
    found = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4:
            found.append(DebEntry(*parts))
    return found


def _order(c: str) -> int:
    """dpkg's weight of one character of a non-digit run: ``~`` first, then the end, letters, the rest."""
    if c == "~":
        return -1
    return ord(c) if c.isalpha() else ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    """dpkg's comparison of an upstream version or a revision (non-digit runs, then digit runs, in turn)."""
    while a or b:
        na, nb = re.match(r"\D*", a).group(), re.match(r"\D*", b).group()  # type: ignore[union-attr]
        for i in range(max(len(na), len(nb))):
            x = _order(na[i]) if i < len(na) else 0
            y = _order(nb[i]) if i < len(nb) else 0
            if x != y:
                return -1 if x < y else 1
        a, b = a[len(na):], b[len(nb):]
        da, db = re.match(r"\d*", a).group(), re.match(r"\d*", b).group()  # type: ignore[union-attr]
        if int(da or 0) != int(db or 0):
            return -1 if int(da or 0) < int(db or 0) else 1
        a, b = a[len(da):], b[len(db):]
    return 0


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as dpkg --compare-versions orders ``a`` and ``b`` (epoch, upstream, revision)."""
    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
        return int(epoch or 0), upstream, revision
    (ea, ua, ra), (eb, ub, rb) = split(a), split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


def newest(ssh: SshSettings, repo: Repository, pkgbase: str) -> DebEntry:
    """The newest ``linux-image-*`` package built from ``pkgbase`` (the Debian source package)."""
    with connect(ssh, repo.ssh, repo.role) as remote:
        found = [e for e in entries(remote, repo) if e.source == pkgbase and e.name.startswith("linux-image-")]
    if not found:
        raise NotPublishedDeb(f"{repo.ssh}:{repo.path}: the distribution {repo.name} has no linux-image package built "
                              f"from {pkgbase}: build and publish it first (ka-build), or give --package FILE")
    return max(found, key=cmp_to_key(_by_version))


def _by_version(x: DebEntry, y: DebEntry) -> int:
    return compare_versions(x.version, y.version)


def indexed(remote: Remote, repo: Repository, name: str) -> set[str]:
    """The sha256 of every version of ``name`` the distribution's index lists."""
    out = remote.run(_reprepro(repo, "--list-format=${SHA256}\\n", "list", repo.name, name), timeout=120).output
    return set(out.split())


def published_sum(ssh: SshSettings, repo: Repository, name: str, sha256: str) -> bool:
    """Whether the index lists ``name`` with these bytes (what apt will install is this file)."""
    with connect(ssh, repo.ssh, repo.role) as remote:
        return sha256 in indexed(remote, repo, name)


def fetch(ssh: SshSettings, repo: Repository, entry: DebEntry, folder: Path) -> Path:
    """Download ``entry``'s package and signature (from ``ka/``) into ``folder``; its sha256 must be the one
    reprepro lists in the distribution's index."""
    if not _DEB.fullmatch(entry.filename):
        raise NotPublishedDeb(f"{entry.name} {entry.version}: {entry.filename!r} is not a package file's name")
    folder.mkdir(parents=True, exist_ok=True)
    with connect(ssh, repo.ssh, repo.role) as remote:
        listed = indexed(remote, repo, entry.name)
        for name in (entry.filename, entry.filename + ".sig"):
            where = posixpath.join(repo.path, PUBLISHED, name)
            if remote.stat(where) is None:
                raise NotPublishedDeb(f"{repo.ssh}:{where}: missing, although {repo.name} lists {entry.name} "
                                      f"{entry.version}")
            part = folder / f".{name}.{os.getpid()}.part"
            remote.get(where, part)
            part.replace(folder / name)
    local = folder / entry.filename
    got = hashlib.sha256(local.read_bytes()).hexdigest()
    if got not in listed:
        raise NotPublishedDeb(f"{local.name}: sha256 {got[:16]}… is not the one {repo.name}'s index lists: the upload "
                              "or the repository is damaged; nothing was installed")
    return local
