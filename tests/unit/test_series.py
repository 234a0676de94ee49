"""Series resolution: quilt series files, natural order, and every way a series can be wrong."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ka.errors import ManifestError
from ka.fleet.manifest import load_manifest
from ka.fleet.repo import WorkTree
from ka.fleet.series import natural_key, parse_series_file, resolve_series
from tests.support.fleet import PATCH, MakeRepo, manifest, resolved
from tests.support.fuzz import examples


@pytest.mark.parametrize(("text", "entries"), [
    ("a.patch\nb.patch\n", [(1, "a.patch", []), (2, "b.patch", [])]),
    ("# comment\n\na.patch -p1\n", [(3, "a.patch", ["-p1"])]),
    ("a.patch # why\n  b.patch\t-p 1\n", [(1, "a.patch", []), (2, "b.patch", ["-p", "1"])]),
    ("   \n#only comments\n", []),
    ("sub/dir.patch\n", [(1, "sub/dir.patch", [])]),
])
def test_parse_series_file(text: str, entries: list[tuple[int, str, list[str]]]) -> None:
    assert parse_series_file(text) == entries


@pytest.mark.parametrize(("names", "ordered"), [
    (["10-a.patch", "2-b.patch", "1-c.patch"], ["1-c.patch", "2-b.patch", "10-a.patch"]),
    (["0002-x.patch", "0001-y.patch", "0010-z.patch"], ["0001-y.patch", "0002-x.patch", "0010-z.patch"]),
    (["b.patch", "B.patch", "a.patch"], ["B.patch", "a.patch", "b.patch"]),
    (["v2-fix.patch", "v10-fix.patch", "v1-fix.patch"], ["v1-fix.patch", "v2-fix.patch", "v10-fix.patch"]),
])
def test_natural_order(names: list[str], ordered: list[str]) -> None:
    assert sorted(names, key=natural_key) == ordered







# (files, message fragment, where)
BAD = [
    ({}, "series 'driver/d' does not exist (looked for patches/driver/d/ and patches/driver/d.patch)",
     "fleet/h.yaml:6: includes (driver/d):"),
    ({"patches/driver/d/readme": "x"}, "series 'driver/d' is empty", "fleet/h.yaml:6"),
    ({"patches/driver/d.patch": ""}, "series 'driver/d' is empty", "fleet/h.yaml:6"),
    ({"patches/driver/d/series": "# nothing\n"}, "series 'driver/d' is empty", "fleet/h.yaml:6"),
    ({"patches/driver/d/series": "a.patch\nmissing.patch\n", "patches/driver/d/a.patch": PATCH},
     "'missing.patch' is listed but patches/driver/d/missing.patch does not exist", "patches/driver/d/series:2"),
    ({"patches/driver/d/series": "../../../etc/passwd\n"}, "leaves the series folder", "patches/driver/d/series:1"),
    ({"patches/driver/d/series": "/etc/passwd\n"}, "leaves the series folder", "patches/driver/d/series:1"),
    ({"patches/driver/d/series": "a.patch -R\n", "patches/driver/d/a.patch": PATCH}, "option -R", "series:1"),
    ({"patches/driver/d/series": "a.patch -p0\n", "patches/driver/d/a.patch": PATCH}, "option -p0", "series:1"),
    ({"patches/driver/d/a.patch": PATCH, "patches/driver/d.patch": PATCH}, "ambiguous", "fleet/h.yaml:6"),
]


@pytest.mark.parametrize(("files", "fragment", "where"), BAD)
def test_bad_series(make_repo: MakeRepo, files: dict[str, str], fragment: str, where: str) -> None:
    root = make_repo({"h": manifest(["driver/d"])}, files, commit=False)
    with pytest.raises(ManifestError) as err:
        resolved(root)
    assert fragment in str(err.value)
    assert where in str(err.value)


@pytest.mark.parametrize("link", ["../../../outside.patch", "/etc/hostname"])
def test_symlink_leaving_patches_is_refused(make_repo: MakeRepo, link: str) -> None:
    root = make_repo({"h": manifest(["driver/d"])}, {"outside.patch": PATCH}, commit=False)
    (root / "patches/driver/d").mkdir(parents=True)
    os.symlink(link, root / "patches/driver/d/0001.patch")
    with pytest.raises(ManifestError, match="symlink that leaves patches/"):
        resolved(root)


def test_symlink_series_folder_leaving_patches_is_refused(make_repo: MakeRepo) -> None:
    root = make_repo({"h": manifest(["driver/d"])}, {"elsewhere/1.patch": PATCH}, commit=False)
    (root / "patches/driver").mkdir()
    os.symlink("../../elsewhere", root / "patches/driver/d")
    with pytest.raises(ManifestError, match="symlink that leaves patches/"):
        resolved(root)






# --- fuzzing: any series file and patch folder resolve, or fail naming the file and line ---------

_ENTRY = st.one_of(
    st.sampled_from(["a.patch", "b.patch", "sub/c.patch", "../x.patch", "/etc/passwd", "a.patch -p1", "a.patch -R",
                     "b.patch -p0", "# c", "", "   ", "a.patch # note", "nope.patch", "series", ".", "..", "sub",
                     "a.patch\t-p 1", "ä.patch", "a.patch -p", "-p1", "sub/../a.patch"]),
    st.text(max_size=30))


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_ENTRY, max_size=8), files=st.sets(st.sampled_from(["a.patch", "b.patch", "sub/c.patch",
                                                                          "empty.patch", "x.txt"]), max_size=5),
       with_series=st.booleans())
@example(lines=["a.patch", "a.patch"], files={"a.patch"}, with_series=True)
@example(lines=["\x00"], files=set(), with_series=True)
def test_any_series_resolves_or_names_the_line(tmp_path_factory: pytest.TempPathFactory, lines: list[str],
                                               files: set[str], with_series: bool) -> None:
    parse_series_file("\n".join(lines))  # never raises
    root = tmp_path_factory.mktemp("fuzz")
    folder = root / "patches/driver/s"
    folder.mkdir(parents=True)
    (root / "fleet").mkdir()
    (root / "fleet/h.yaml").write_text(manifest(["driver/s"]))
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("" if name == "empty.patch" else PATCH)
    if with_series:
        (folder / "series").write_text("\n".join(lines), errors="surrogateescape")
    view = WorkTree(root)
    try:
        series = resolve_series(view, load_manifest(view, "h"))
    except ManifestError as exc:
        assert all(str(p).startswith(("patches/driver/s", "fleet/h.yaml:")) for p in exc.problems), exc.problems
        return
    assert series and all(p.path.startswith("patches/driver/s/") for s in series for p in s.patches)
