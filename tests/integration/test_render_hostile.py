"""No manifest value runs a command when the rendered build files are read.

Every field that reaches the PKGBUILD (bash sources it: makepkg, ``makepkg --printsrcinfo``,
the README's by-hand recipe) or ``debian/rules`` (make reads it) is set, one at a time, to
hostile text.  Each value must either be refused when the manifest is read, with
``file:line: field``, or come back byte-identical when the file is read as its tools read it;
and nothing may run: every payload would create the canary file.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ka.build.render import render
from ka.errors import BadInput, ManifestError
from ka.fleet.repo import WorkTree
from ka.promote.flow import plan_host

CANARY = "ka-canary"
PAYLOADS = [
    "$(touch ka-canary)",
    "`touch ka-canary`",
    "${IFS}$(touch${IFS}ka-canary)",
    "x';touch ka-canary;'",
    'x";touch ka-canary;"',
    "x\ntouch ka-canary",
    "x;touch ka-canary",
    "$$(touch ka-canary)",
    "$(shell touch ka-canary)",
    "x%touch ka-canary",
    "x\\",
    "a b",
    "x|touch ka-canary",
]
B2 = "0" * 128


def _manifest(fmt: str) -> dict[str, Any]:
    source = {"git": "https://git.kernel.org/pub/scm/linux/kernel/git/stable/linux.git"}
    return {"description": "a test host", "baseline": {"ref": "v6.12.117"}, "apply_order": ["soc"],
            "includes": ["soc/x"],
            "package": {"format": fmt, "config": "fleet/configs/h.config", "source": source}}


def _set(data: dict[str, Any], field: str, value: str) -> None:
    *path, last = field.split(".")
    for key in path:
        data = data[key]
    if field == "package.source.tarball":
        data.pop("git")
        data["b2sum"] = B2
    data[last] = value


#: field → how it reads back from the sourced PKGBUILD (a bash expression), or None where it only
#: reaches a file as data (the config's path)
FIELDS = {
    "description": '"$_desc"',
    "baseline.ref": '"$_srctag"',
    "package.pkgbase": '"$pkgbase"',
    "package.pkgrel": '"$pkgrel"',
    "package.arch": '"${arch[0]}"',
    "package.kernel_arch": None,
    "package.image": None,
    "package.source.git": '"${source[0]}"',
    "package.source.tarball": '"${source[0]}"',
    "package.config": None,
}


def _value(field: str, payload: str) -> str:
    """The payload as the field would carry it: in a URL's path for the sources (no spaces there:
    ``$IFS`` stands in for them, as an attacker writes it), as it is elsewhere."""
    if field.startswith("package.source."):
        path = payload.replace(" ka-canary", "$IFS./ka-canary").replace(" ", "$IFS")
        return f"https://git.kernel.org/x{path}.tar.xz"
    return payload


def _repo(tmp_path: Path, manifest: dict[str, Any], config: bytes = b"CONFIG_LOCALVERSION=\"-h\"\n") -> Path:
    root = tmp_path / "repo"
    (root / "fleet/configs").mkdir(parents=True)
    (root / "patches/soc").mkdir(parents=True)
    (root / "fleet/h.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    (root / "fleet/configs/h.config").write_bytes(config)
    (root / "patches/soc/x.patch").write_text("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n")
    return root


def _sandbox(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    box = tmp_path / "box"
    box.mkdir()
    return box, {"PATH": "/usr/bin:/bin", "HOME": str(box), "LC_ALL": "C"}


def _read_back_pkgbuild(folder: Path, expression: str, tmp_path: Path) -> bytes:
    """Source the PKGBUILD in a sandbox as makepkg does and print ``expression``."""
    box, env = _sandbox(tmp_path)
    script = f'source "$1" || exit 9; printf "%s" {expression}'
    res = subprocess.run(["bash", "-c", script, "bash", str(folder / "PKGBUILD")], cwd=box, env=env,
                         capture_output=True, timeout=30)
    assert not (box / CANARY).exists() and not (folder / CANARY).exists(), "sourcing the PKGBUILD ran a command"
    assert res.returncode == 0, res.stderr
    return res.stdout


def _read_rules(folder: Path, tmp_path: Path) -> None:
    """``make -n`` on debian/rules in a sandbox: make expands every variable, and must run nothing."""
    box, env = _sandbox(tmp_path)
    for target in ("clean", "binary"):
        subprocess.run(["make", "-n", "-f", str(folder / "debian/rules"), target], cwd=box, env=env,
                       capture_output=True, timeout=30)
        assert not (box / CANARY).exists() and not (folder / CANARY).exists(), f"make -n {target} ran a command"


CASES = [(fmt, field, value) for fmt in ("pacman", "deb") for field in FIELDS for value in PAYLOADS]


@pytest.mark.parametrize(("fmt", "field", "value"), CASES)
def test_a_hostile_value_is_refused_or_inert(fmt: str, field: str, value: str, tmp_path: Path) -> None:
    manifest = _manifest(fmt)
    value = _value(field, value)
    _set(manifest, field, value)
    root = _repo(tmp_path, manifest)
    try:
        plan = plan_host(WorkTree(root), "h")
        folder = render(WorkTree(root), plan, None)
    except ManifestError as exc:
        found = [p for p in exc.problems if p.field == field]
        assert found, f"refused, but not for {field}: {exc}"
        assert found[0].file == "fleet/h.yaml" and found[0].line is not None, str(exc)
        return
    out = tmp_path / "rendered"
    folder.write(out)
    if fmt == "pacman":
        expression = FIELDS[field]
        if expression is not None:
            got = _read_back_pkgbuild(out, expression, tmp_path)
            assert value.encode() in got, (field, value, got)
            if field == "description":
                assert got == b"h: " + value.encode(), got  # the PKGBUILD describes "<host>: <description>"
            elif field not in ("package.source.git", "package.source.tarball"):
                assert got == value.encode(), (field, value, got)
        else:
            _read_back_pkgbuild(out, '""', tmp_path)
    else:
        _read_rules(out, tmp_path)
        control = (out / "debian/control").read_text()
        assert all(line.startswith((" ", "#")) or ":" in line or not line for line in control.splitlines()), control


@pytest.mark.parametrize("fmt", ["pacman", "deb"])
@pytest.mark.parametrize("value", [p for p in PAYLOADS if "\n" not in p])
def test_a_hostile_localversion_in_the_config_is_refused(fmt: str, value: str, tmp_path: Path) -> None:
    """The config is the pull request's too: CONFIG_LOCALVERSION becomes the kernel release, which names
    files and packages on the build host and the device."""
    root = _repo(tmp_path, _manifest(fmt), f'CONFIG_LOCALVERSION="-{value}"\n'.encode())
    with pytest.raises(ManifestError) as refused:
        render(WorkTree(root), plan_host(WorkTree(root), "h"), None)
    (problem,) = refused.value.problems
    # a value no config line can hold is refused where it is written; one that parses, by the manifest's field
    where = (problem.file, problem.line) if problem.file == "fleet/h.yaml" else (problem.file, problem.line) == (
        "fleet/configs/h.config", 1)
    assert problem.field == "package.config" and problem.line is not None and where
    assert "CONFIG_LOCALVERSION" in problem.message


@pytest.mark.parametrize("packager", ["x\nDepends: evil", "ka <a@b>\nEssential: yes", "$(id) <a@b>", "nobody"])
def test_a_packager_that_would_add_fields_or_lines_is_refused(packager: str, tmp_path: Path) -> None:
    root = _repo(tmp_path, _manifest("deb"))
    with pytest.raises(BadInput, match="KA_PACKAGER"):
        render(WorkTree(root), plan_host(WorkTree(root), "h"), None, packager=packager)


def test_the_payloads_would_run_if_pasted_unquoted(tmp_path: Path) -> None:
    """The test's own check: each payload that can run in bash does create the canary there."""
    box, env = _sandbox(tmp_path)
    ran = 0
    for payload in PAYLOADS:
        subprocess.run(["bash", "-c", f'x="{payload}"'], cwd=box, env=env, capture_output=True, timeout=10)
        if (box / CANARY).exists():
            ran += 1
            (box / CANARY).unlink()
    assert ran >= 3
