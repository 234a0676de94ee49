"""The systemd units pass systemd-analyze verify, with the hardening the issue asks for."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import PROJECT
from tests.support.needs import require

ROOT = PROJECT
UNITS = ["ka-bot.service", "ka-worker.service"]


@pytest.mark.parametrize("unit", UNITS)
def test_unit_verifies(unit: str, tmp_path: Path) -> None:
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze (apt-get install systemd)")
    text = (ROOT / "systemd" / unit).read_text()
    # verify checks that ExecStart exists: point it at this installation's ka-bot
    local = tmp_path / unit
    local.write_text(text.replace("/opt/kernel-agent/.venv/bin/ka-bot", str(Path(sys.executable).parent / "ka-bot")))
    res = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True)
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr


def test_verify_catches_a_typo(tmp_path: Path) -> None:
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze (apt-get install systemd)")
    bad = tmp_path / "bad.service"
    bad.write_text("[Service]\nExecStart=/bin/true\nNoNewPrivilege=yes\n")
    res = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True)
    assert "Unknown key" in res.stderr and "NoNewPrivilege" in res.stderr  # wording varies across versions


@pytest.mark.parametrize("unit", UNITS)
def test_hardening_and_secrets(unit: str) -> None:
    text = (ROOT / "systemd" / unit).read_text()
    for line in ("User=kernel-agent", "StateDirectory=kernel-agent", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ProtectHome=yes", "PrivateTmp=yes", "LoadCredential=webhook-secret:",
                 "KA_WEBHOOK_SECRET_FILE=%d/webhook-secret"):
        assert line in text
    assert "KA_WEBHOOK_SECRET=" not in text and "KA_FORGEJO_TOKEN=" not in text


def test_env_example_holds_no_secret() -> None:
    text = (ROOT / "systemd" / "ka-bot.env.example").read_text()
    assert "KA_FORGEJO_URL=" in text and "SECRET=" not in text and "TOKEN=" not in text
