"""What the tests stand on: the small kernel, the ssh, build and install labs, the fake Forgejo,
the bot rig, the QEMU host."""

from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]  # the project's root: README.md, templates/, tests/samples/
