"""Detached gpg signatures of packages, made and checked at once (through ka/io/runner.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ka.errors import EXIT_ENVIRONMENT, KaError
from ka.io.runner import run

#: what gpg says when a key needs a passphrase it was not given (--pinentry-mode error), or a wrong one
_PASSPHRASE = ("No pinentry", "Bad passphrase", "Operation cancelled", "Inappropriate ioctl", "No passphrase given")


class SignError(KaError):
    """gpg could not sign, or the signature does not verify with the expected key."""

    exit_code = EXIT_ENVIRONMENT


@dataclass(frozen=True)
class Signature:
    """A verified detached signature."""

    path: Path
    signer: str  # the fingerprint gpg verified it with


def _env(gnupghome: Path | None) -> dict[str, str] | None:
    return {"GNUPGHOME": str(gnupghome)} if gnupghome else None


def sign(path: Path, key: str, gnupghome: Path | None) -> Signature:
    """Sign ``path`` into ``path.sig`` (binary, detached) with ``key``, then verify it."""
    sig = path.with_name(path.name + ".sig")
    res = run(["gpg", "--batch", "--yes", "--no-tty", "--pinentry-mode", "error", "--detach-sign", "--no-armor",
               "--local-user", key, "--output", sig, path], env=_env(gnupghome), check=False, timeout=120)
    if not res.ok:
        sig.unlink(missing_ok=True)
        said = res.err().strip()
        home = gnupghome or "~/.gnupg"
        if any(word in said for word in _PASSPHRASE):
            raise SignError(f"gpg cannot sign {path.name} with {key}: the key needs a passphrase and gpg-agent has "
                            f"none for it (ka-build never asks for one): unlock it once in that agent (GNUPGHOME="
                            f"{home} gpg --sign on any file) or sign with a subkey kept without one; gpg said: "
                            f"{said[-200:]}")
        raise SignError(f"gpg cannot sign {path.name} with {key}: {said[-300:]} (GNUPGHOME={home}: is the secret "
                        "key there?)")
    return verify(path, sig, key, gnupghome)


def verify(path: Path, sig: Path, key: str, gnupghome: Path | None) -> Signature:
    """Check a detached signature, and that ``key`` (an id or fingerprint) made it."""
    res = run(["gpg", "--batch", "--no-tty", "--status-fd", "1", "--verify", sig, path], env=_env(gnupghome),
              check=False, timeout=120)
    valid = [ln.split() for ln in res.text().splitlines() if ln.startswith("[GNUPG:] VALIDSIG ")]
    if not res.ok or not valid:
        raise SignError(f"{sig.name}: the signature does not verify: {res.err().strip()[-300:]}")
    signing, primary = valid[0][2], valid[0][-1]  # the (sub)key that signed, and its primary key
    if not any(f.upper().endswith(key.upper()) for f in (signing, primary)):
        raise SignError(f"{sig.name}: signed by {primary}, not by the configured key {key}")
    return Signature(sig, primary)


def public_key(key: str, gnupghome: Path | None) -> bytes:
    """``key``'s public key (binary, as apt's ``signed-by`` keyrings are): what hosts verify with."""
    res = run(["gpg", "--batch", "--no-tty", "--export", key], env=_env(gnupghome), check=False, timeout=60)
    if not res.ok or not res.stdout:
        raise SignError(f"gpg cannot export the key {key} (GNUPGHOME={gnupghome or '~/.gnupg'}): "
                        f"{res.err().strip()[-300:] or 'no such key'}")
    return res.stdout
