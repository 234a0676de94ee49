"""Every kind of bad input exits 2, names the file and field, and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from ka.cli.main import main
from tests.support.fleet import AMPERE, MakeRepo, fleet_files, manifest
from tests.support.kernel import SmallKernel


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and ".git/" not in str(p)}


# (manifest edits or file edits, argv after "promote", expected message fragments)
CASES = [
    ({}, ["nope"], ["unknown host 'nope' (no fleet/nope.yaml); known hosts: ampere, ohm"]),
    ({}, ["../ampere"], ["unknown host '../ampere'"]),
    ({}, ["infra"], ["unknown host 'infra'"]),
    ({"fleet/ampere.yaml": AMPERE.replace("description", "descripton")}, ["ampere"],
     ["fleet/ampere.yaml:1: descripton: unknown key; did you mean 'description'?"]),
    ({"fleet/ampere.yaml": AMPERE.replace("soc/base", "soc/bsae")}, ["ampere"],
     ["fleet/ampere.yaml:8: includes (soc/bsae): series 'soc/bsae' does not exist"]),
    ({"fleet/ampere.yaml": AMPERE.replace("v6.12.0", "v9.9")}, ["ampere", "--kernel-tree", "{kernel}"],
     ["fleet/ampere.yaml: baseline.ref: 'v9.9' is not a tag or commit in the kernel tree"]),
    ({"fleet/ampere.yaml": AMPERE + "parity:\n  canonical: ref/none.patch\n"}, ["ampere"],
     ["fleet/ampere.yaml:11: parity.canonical: ref/none.patch does not exist in the repository"]),
    ({"patches/driver/bes2600/series": "new.patch\nhook.patch\ngone.patch\n"}, ["ampere"],
     ["patches/driver/bes2600/series:3: 'gone.patch' is listed but"]),
    ({"fleet/volt.yaml": "includes: [\n"}, ["--all"], ["fleet/volt.yaml:2: not valid YAML"]),
    ({}, ["--all", "-o", "x.patch"], ["-o FILE needs exactly one host"]),
    ({}, [], ["name one or more hosts, or give --all"]),
    ({}, ["ampere", "--all"], ["name one or more hosts, or give --all"]),
    ({}, ["ampere", "--rev", "no-such-branch"], ["--rev no-such-branch: no such commit"]),
    ({}, ["ampere", "--rev=--upload-pack=x"], ["not a revision"]),
    ({}, ["ampere", "--kernel-tree", "{plain}"], ["not a git repository"]),
    ({}, ["ampere", "--kernel-tree", "{repo}/none"], ["no such folder"]),
]


@pytest.mark.parametrize("argv", [["promote"], ["build"], ["install"], ["install", "--dry-run"], ["status"],
                                  ["baseline", "bump", "--to", "v6.12.1"]])
def test_every_verb_suggests_the_host_meant(argv: list[str], make_repo: MakeRepo, small_kernel: SmallKernel,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_repo({"ampere": AMPERE, "ohm": AMPERE}, fleet_files(small_kernel))
    monkeypatch.chdir(root)
    before = snapshot(root)
    tree = ["--kernel-tree", str(small_kernel.bare)] if argv[0] == "baseline" else []
    assert main([*argv, "amper", "--repo", str(root), *tree]) == 2
    err = capsys.readouterr().err
    assert "unknown host 'amper' (no fleet/amper.yaml); known hosts: ampere, ohm; did you mean 'ampere'?" in err, err
    assert snapshot(root) == before


@pytest.mark.parametrize(("edits", "argv", "fragments"), CASES)
def test_bad_input(make_repo: MakeRepo, small_kernel: SmallKernel, capsys: pytest.CaptureFixture[str],
                   edits: dict[str, str], argv: list[str], fragments: list[str]) -> None:
    files = {**fleet_files(small_kernel), **{k: v for k, v in edits.items() if not k.startswith("fleet/")}}
    hosts = {"ampere": AMPERE, "ohm": manifest(["soc/base"])}
    hosts.update({k[6:-5]: v for k, v in edits.items() if k.startswith("fleet/")})
    root = make_repo(hosts, files)
    assert main(["promote", "ohm", "--repo", str(root)]) == 0  # an earlier good output must survive
    capsys.readouterr()
    before = snapshot(root)
    plain = root.parent / "plain"
    plain.mkdir()
    args = [a.format(kernel=small_kernel.bare, repo=root, plain=plain) for a in argv]
    code = main(["promote", *args, "--repo", str(root)])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    for fragment in fragments:
        assert fragment in err
    assert err.startswith("ka: error: ")
    assert out == ""
    assert snapshot(root) == before


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["promote", "--bogus"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_outside_any_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["promote", "ampere"]) == 2
    assert "no kernel-agent repository here or above" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ka pkgdiff: (file A and its content, file B and its content, expected message fragments)
PKGDIFF_CASES = [
    (("a.deb", b"!<arch>\n"), ("README.md", b"# hi\n"), ["README.md: not a package file", ".pkg.tar.zst", ".deb"]),
    (("a.deb", b"!<arch>\n"), ("b.pkg.tar.zst", b"x"), ["is a deb package and", "a pacman one",
                                                        "two packages of one format"]),
    (("a.pkg.tar.zst", b"junk"), ("b.pkg.tar.zst", b"junk"), ["a.pkg.tar.zst: not a pacman package"]),
    (("a.deb", b"junk"), ("b.deb", b"junk"), ["a.deb: not a Debian package"]),
    (("a.deb", None), ("b.deb", b"junk"), ["a.deb: no such package file"]),
]


@pytest.mark.parametrize(("a", "b", "fragments"), PKGDIFF_CASES)
def test_pkgdiff_refuses_what_it_cannot_compare(a: tuple[str, bytes | None], b: tuple[str, bytes | None],
                                                fragments: list[str], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    paths = []
    for name, content in (a, b):
        paths.append(tmp_path / name)
        if content is not None:
            paths[-1].write_bytes(content)
    assert main(["pkgdiff", *map(str, paths)]) == 2  # bad input, not "different" (1)
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("ka: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


@pytest.mark.parametrize(("argv", "fragment"), [
    ([], "name one or more hosts, or give --all"),
    (["ampere", "--all"], "name one or more hosts, or give --all"),
    (["ampere", "ohm", "--rollback"], "--rollback is for one host: name exactly one"),
    (["--all", "--rollback", "6.12.0-ampere-1"], "--rollback is for one host"),
    (["ampere", "ohm", "nope"], "unknown host 'nope'"),
])
def test_a_rollout_asked_wrongly_is_refused_before_any_host(argv: list[str], fragment: str, make_repo: MakeRepo,
                                                             small_kernel: SmallKernel,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    root = make_repo({"ampere": AMPERE, "ohm": AMPERE}, fleet_files(small_kernel))
    before = snapshot(root)
    assert main(["install", *argv, "--repo", str(root)]) == 2
    assert fragment in capsys.readouterr().err
    assert snapshot(root) == before
