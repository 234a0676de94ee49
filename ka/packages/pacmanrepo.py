"""Publishing packages: upload them with their signatures, ``repo-add -s`` under a lock, check.

``repo-add`` runs on the repository host under ``flock`` on a lock file beside the database,
so two publishes (a bot job and a maintainer's run) never interleave their updates of it.
The database is signed there (``-s -k KEY``: that host's keyring holds the key).  Afterwards
the database must list the new version, or the publish failed.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from ka.fleet.infra import Repository
from ka.io.ssh import SshSettings, connect
from ka.packages.published import Log, Published, PublishError


def publish(ssh: SshSettings, repo: Repository, packages: list[Path], versions: list[str], log: Log) -> Published:
    """Upload ``packages`` (and their ``.sig``), add them to the database, check it lists ``versions``."""
    database = f"{repo.name}.db.tar.zst"
    with connect(ssh, repo.ssh) as remote:
        remote.mkdirs(repo.path)
        for pkg in packages:
            for path in (pkg, pkg.with_name(pkg.name + ".sig")):
                remote.sftp.put(str(path), posixpath.join(repo.path, path.name))
        log(f"uploaded {len(packages)} packages and their signatures to {repo.ssh}:{repo.path}")
        env = {"GNUPGHOME": repo.gnupghome} if repo.gnupghome else None
        remote.run(["flock", ".ka-repo.lock", "repo-add", "--quiet", "--sign", "--key", repo.key, database,
                    *(p.name for p in packages)], cwd=repo.path, env=env, timeout=600, on_line=log)
        listing = remote.run(["bsdtar", "-tf", database], cwd=repo.path, timeout=120).output.split()
    entries = tuple(sorted({e.split("/", 1)[0] for e in listing}))
    missing = [v for v in versions if v not in entries]
    if missing:
        raise PublishError(f"{repo.ssh}:{repo.path}/{database} does not list {', '.join(missing)} after repo-add")
    log(f"{database} lists {', '.join(versions)}")
    return Published(repo.ssh, repo.path, database, repo.url, entries)
