"""Publishing pacman packages: staged beside the repository, put in place and ``repo-add -s`` under a
lock, checked; on any failure the repository is byte for byte as it was.

Everything that changes the repository runs on its host in one step under ``flock`` on a lock file
beside the database (:data:`STEP`), so two publishes (a bot job and a maintainer's run) never
interleave: the database files are copied aside; a package already published under the same file
name must have the same bytes (then it stays, with its signature; when every one does, nothing
changes at all), else the publish is refused, unless ``replace`` says so; the new files are moved
in from the staging folder; ``repo-add -s`` signs the database there (that host's keyring holds
the key).  When ``repo-add`` fails, the new
files are taken out again and the database files, and any replaced package, come back from the
copies.  Afterwards the database must list the new version, or the publish failed.
"""

from __future__ import annotations

import posixpath
import secrets
from pathlib import Path

from ka.fleet.infra import Repository
from ka.io.ssh import Remote, RemoteFailed, SshSettings, connect
from ka.packages.published import Log, Published, PublishError

#: the exit code of STEP when a published file name holds other bytes (and no replace was asked)
OTHER_BYTES = 17
#: One publish, on the repository host, under the lock: sh -c STEP sh STAGING DATABASE KEY REPLACE PACKAGE…
#: (the script never interpolates its arguments into code; the file names are the packages' own).
STEP = r"""
set -u
staging=$1 db=$2 key=$3 replace=$4
shift 4
name=${db%.db.tar.zst}
keep=$staging/.before
mkdir -p -- "$keep" || exit 3
each_db_file() {
    for f in "$name.db" "$db" "$db.sig" "$name.files" "$name.files.tar.zst" "$name.files.tar.zst.sig"; do
        "$1" "$f" || return 1
    done
}
set_aside() { if [ -e "$1" ] || [ -L "$1" ]; then cp -a -- "$1" "$keep/"; fi; }
put_back() {
    rm -f -- "$1"
    if [ -e "$keep/$1" ] || [ -L "$keep/$1" ]; then cp -a -- "$keep/$1" "$1"; fi
}
each_db_file set_aside || exit 3
for p in "$@"; do
    if [ -e "$p" ]; then
        if cmp -s -- "$staging/$p" "$p"; then continue; fi
        if [ "$replace" != 1 ]; then
            echo "$p is published with other bytes" >&2
            exit 17
        fi
        cp -a -- "$p" "$keep/" || exit 3
        if [ -e "$p.sig" ]; then cp -a -- "$p.sig" "$keep/" || exit 3; fi
    fi
    : > "$staging/.new-$p" || exit 3
done
undo() {
    for p in "$@"; do
        if [ -e "$staging/.new-$p" ]; then
            rm -f -- "$p" "$p.sig"
            if [ -e "$keep/$p" ]; then mv -f -- "$keep/$p" "$p"; fi
            if [ -e "$keep/$p.sig" ]; then mv -f -- "$keep/$p.sig" "$p.sig"; fi
        fi
    done
    each_db_file put_back
}
new=0
for p in "$@"; do
    if [ -e "$staging/.new-$p" ]; then
        new=1
        mv -f -- "$staging/$p.sig" "$p.sig" && mv -f -- "$staging/$p" "$p" || { undo "$@"; exit 3; }
    fi
done
if [ "$new" = 0 ]; then
    echo "every package is published already, with these bytes"
    exit 0
fi
if ! repo-add --quiet --sign --key "$key" "$db" "$@"; then
    undo "$@"
    exit 1
fi
"""


def publish(ssh: SshSettings, repo: Repository, packages: list[Path], versions: list[str], log: Log,
            replace: bool = False) -> Published:
    """Stage ``packages`` (and their ``.sig``) beside the repository, put them in place and add them to the
    database in one locked step (:data:`STEP`), then check it lists ``versions``.  A package published under
    the same file name with other bytes is refused unless ``replace``; a failure leaves the repository as it
    was."""
    database = f"{repo.name}.db.tar.zst"
    with connect(ssh, repo.ssh, repo.role) as remote:
        remote.mkdirs(repo.path)
        staging = f".incoming-{secrets.token_hex(8)}"
        remote.mkdirs(posixpath.join(repo.path, staging))
        try:
            for pkg in packages:
                for path in (pkg, pkg.with_name(pkg.name + ".sig")):
                    remote.sftp.put(str(path), posixpath.join(repo.path, staging, path.name))
            log(f"uploaded {len(packages)} packages and their signatures to {repo.ssh}:{repo.path}/{staging}")
            _step(remote, repo, staging, database, packages, replace, log)
            listing = remote.run(["bsdtar", "-tf", database], cwd=repo.path, timeout=120).output.split()
        finally:
            remote.run(["rm", "-rf", "--", posixpath.join(repo.path, staging)], timeout=120, check=False)
    entries = tuple(sorted({e.split("/", 1)[0] for e in listing}))
    missing = [v for v in versions if v not in entries]
    if missing:
        raise PublishError(f"{repo.ssh}:{repo.path}/{database} does not list {', '.join(missing)} after repo-add")
    log(f"{database} lists {', '.join(versions)}")
    return Published(repo.ssh, repo.path, database, repo.url, entries)


def _step(remote: Remote, repo: Repository, staging: str, database: str, packages: list[Path], replace: bool,
          log: Log) -> None:
    env = {"GNUPGHOME": repo.gnupghome} if repo.gnupghome else None
    argv = ["flock", ".ka-repo.lock", "sh", "-c", STEP, "sh", staging, database, repo.key, "1" if replace else "0",
            *(p.name for p in packages)]
    try:
        remote.run(argv, cwd=repo.path, env=env, timeout=600, on_line=log)
    except RemoteFailed as exc:
        if exc.code == OTHER_BYTES:
            raise PublishError(f"{repo.ssh}:{repo.path}: {exc.tail or 'a package'}: a published version's bytes "
                               "never change; raise package.pkgrel and build again, or publish with --replace; "
                               "the repository is unchanged") from None
        raise PublishError(f"the repository on {repo.ssh} did not take the packages ({exc.tail or exc}); the "
                           "repository is unchanged") from None
