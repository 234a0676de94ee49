"""Manifest validation: every bad input names the file, the line and the field."""

from __future__ import annotations

import pytest

from ka.errors import ManifestError
from ka.fleet.manifest import load_manifest
from ka.fleet.repo import WorkTree
from tests.support.fleet import MakeRepo, manifest


def test_a_manifest_over_the_size_cap_is_refused(make_repo: MakeRepo) -> None:
    root = make_repo({"big": manifest(["soc/base"]) + "#" * (64 * 1024) + "\n"}, {})
    with pytest.raises(ManifestError, match=r"fleet/big.yaml: is 64\.\d KiB; a manifest may hold at most 64 KiB"):
        load_manifest(WorkTree(root), "big")
