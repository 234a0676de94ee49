"""fleet/infra.yaml: the settings that decide where kernel-agent connects, validated with file, line and field;
and which parity references a manifest may name."""

from __future__ import annotations

from pathlib import Path

import pytest

from ka.errors import ManifestError, ReferenceRefused
from ka.fleet.infra import BuildHost, Folder, load_infra
from ka.fleet.repo import WorkTree
from ka.promote.canonical import OnlyNamed, allowed_folder

BUILD = "build_hosts:\n  - ssh: boltzmann\n    workdir: ka-builds\n"


def _load(tmp_path: Path, text: str) -> object:
    (tmp_path / "fleet").mkdir(exist_ok=True)
    (tmp_path / "fleet/infra.yaml").write_text(text)
    return load_infra(WorkTree(tmp_path))


def test_parity_references_and_pull_request_build_hosts_are_read(tmp_path: Path) -> None:
    infra = _load(tmp_path, BUILD + "parity_references:\n  - ssh: boltzmann\n    path: ~/canonical\n"
                                    "pull_request_build_hosts:\n  - ssh: boltzmann-pr\n    workdir: ka-builds\n")
    assert infra.parity_references == (Folder("boltzmann", "~/canonical"),)  # type: ignore[attr-defined]
    assert infra.pull_request_build_hosts == (BuildHost("boltzmann-pr", "ka-builds"),)  # type: ignore[attr-defined]


def test_a_build_host_runs_one_build_at_a_time_unless_max_builds_says_more(tmp_path: Path) -> None:
    infra = _load(tmp_path, BUILD + "  - ssh: fermi\n    workdir: w\n    max_builds: 3\n")
    assert [b.max_builds for b in infra.build_hosts] == [1, 3]  # type: ignore[attr-defined]


def test_a_build_host_keeps_a_5g_compiler_cache_unless_told_a_size_or_off(tmp_path: Path) -> None:
    infra = _load(tmp_path, BUILD + "  - ssh: fermi\n    workdir: w\n    ccache: 20G\n"
                                    "  - ssh: hertz\n    workdir: w\n    ccache: off\n")
    assert [b.ccache for b in infra.build_hosts] == ["5G", "20G", None]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("text", "where"), [
    ("parity_references: boltzmann:/srv\n", "fleet/infra.yaml:1: parity_references: must be a list"),
    ("parity_references:\n  - ssh: boltzmann\n", "fleet/infra.yaml:2: parity_references[0].path: missing"),
    ("parity_references:\n  - ssh: boltzmann\n    path: /srv/../etc\n",
     "fleet/infra.yaml:3: parity_references[0].path: '/srv/../etc': no '..'"),
    ("parity_references:\n  - ssh: boltzmann\n    path: /srv/$(x)\n",
     "fleet/infra.yaml:3: parity_references[0].path: '/srv/$(x)' is not a folder on that host"),
    ("parity_references:\n  - ssh: b\n    path: /srv\n    host: x\n",
     "fleet/infra.yaml:4: parity_references[0].host: unknown key"),
    (BUILD + "pull_request_build_hosts:\n  - ssh: boltzmann\n    workdir: pr\n",
     "fleet/infra.yaml:5: pull_request_build_hosts[0].ssh: boltzmann is also in build_hosts"),
    ("pull_request_build_hosts: []\n", "fleet/infra.yaml:1: pull_request_build_hosts: must be a list of build hosts"),
    (BUILD + "    max_builds: 0\n",
     "fleet/infra.yaml:4: build_hosts[0].max_builds: 0 is not a whole number of builds at once from 1 to 64"),
    (BUILD + "    max_builds: two\n", "fleet/infra.yaml:4: build_hosts[0].max_builds: 'two' is not a whole number"),
    (BUILD + "    max_builds: true\n", "fleet/infra.yaml:4: build_hosts[0].max_builds: True is not a whole number"),
    (BUILD + "    ccache: 5\n", "fleet/infra.yaml:4: build_hosts[0].ccache: 5 is not a size such as 5G"),
    (BUILD + "    ccache: 5GB\n", "fleet/infra.yaml:4: build_hosts[0].ccache: '5GB' is not a size such as 5G"),
    (BUILD + "    ccache: on\n", "fleet/infra.yaml:4: build_hosts[0].ccache: True is not a size"),
])
def test_a_bad_infra_is_refused_with_file_line_and_field(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(ManifestError) as refused:
        _load(tmp_path, text)
    assert where in str(refused.value), str(refused.value)


FOLDERS = (Folder("boltzmann", "~/canonical"), Folder("fermi", "/srv/refs/"))


@pytest.mark.parametrize(("host", "path", "allowed"), [
    ("boltzmann", "~/canonical/ampere.patch", True),
    ("boltzmann", "canonical/ampere.patch", True),  # the login's home, written either way
    ("boltzmann", "canonical/sub/./x.patch", True),
    ("fermi", "/srv/refs/x.patch", True),
    ("fermi", "/srv/refs", True),
    ("fermi", "/srv/refsx/y.patch", False),  # a neighbour whose name begins the same
    ("fermi", "//srv/refs/x.patch", False),
    ("boltzmann", "/srv/refs/x.patch", False),  # another host's folder
    ("Boltzmann", "~/canonical/x.patch", False),
    ("boltzmann", "~/.gnupg-repo/private-keys-v1.d/k.key", False),
    ("boltzmann", "~root/canonical/x", False),
    ("hertz", "~/canonical/x.patch", False),
])
def test_a_reference_is_allowed_only_inside_a_listed_folder(host: str, path: str, allowed: bool) -> None:
    assert (allowed_folder(host, path, FOLDERS) is not None) is allowed


class _Reader:
    def __init__(self) -> None:
        self.read_paths: list[tuple[str, str]] = []

    def read(self, host: str, path: str) -> bytes:
        self.read_paths.append((host, path))
        return b"x"

    def close(self) -> None:
        pass


def test_a_commit_off_the_default_branch_reads_only_the_references_it_names() -> None:
    reader = _Reader()
    only = OnlyNamed(reader, lambda: {("boltzmann", "~/canonical/ampere.patch")})  # type: ignore[arg-type]
    assert only.read("boltzmann", "canonical/ampere.patch") == b"x"
    with pytest.raises(ReferenceRefused, match="may compare only with the parity references the default branch"):
        only.read("boltzmann", "~/canonical/other.patch")
    assert reader.read_paths == [("boltzmann", "canonical/ampere.patch")]


def test_each_machine_is_named_with_the_line_that_names_it(tmp_path: Path) -> None:
    infra = _load(tmp_path, BUILD + "  - ssh: fermi\n    workdir: b\nbackup:\n  path: /srv/b\n  ssh: hertz\n"
                                    "parity_references:\n  - ssh: boltzmann\n    path: canonical\n")
    roles = [m.role for m in (*infra.build_hosts, infra.backup, *infra.parity_references)]  # type: ignore[attr-defined]
    assert roles == ["boltzmann (build_hosts[0].ssh, fleet/infra.yaml:2)",
                     "fermi (build_hosts[1].ssh, fleet/infra.yaml:4)", "hertz (backup.ssh, fleet/infra.yaml:8)",
                     "boltzmann (parity_references[0].ssh, fleet/infra.yaml:10)"]
    assert infra.build_hosts[0] == BuildHost("boltzmann", "ka-builds")  # type: ignore[attr-defined]  # not compared
