"""Signing with real gpg: a key that needs a passphrase is named as such, and leaves no signature behind."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ka.packages.sign import SignError, sign
from tests.support.buildlab import stop_gpg_agent


@pytest.fixture
def locked_key(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A keyring whose signing key has a passphrase, which the agent does not hold."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--homedir", str(home), "--pinentry-mode", "loopback", "--passphrase", "right one"]
    subprocess.run([*gpg, "--quick-gen-key", "Locked Key <locked@example.org>", "ed25519", "sign", "never"],
                   check=True, capture_output=True)
    listing = subprocess.run(["gpg", "--homedir", str(home), "--with-colons", "--list-secret-keys"], check=True,
                             capture_output=True, text=True).stdout
    fingerprint = next(ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr:"))
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=True)  # forget it
    yield home, fingerprint
    stop_gpg_agent(home)


def test_a_key_that_needs_a_passphrase_is_named_and_leaves_no_signature(locked_key: tuple[Path, str],
                                                                        tmp_path: Path) -> None:
    home, fingerprint = locked_key
    package = tmp_path / "linux-h-6.12.0-1-aarch64.pkg.tar.zst"
    package.write_bytes(b"not really a package")
    with pytest.raises(SignError) as caught:
        sign(package, fingerprint, home)
    said = str(caught.value)
    assert "the key needs a passphrase and gpg-agent has none for it" in said and "ka-build never asks" in said
    assert not package.with_name(package.name + ".sig").exists()
