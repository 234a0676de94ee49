"""The whole thing: a browser following a job page, a real arm64 host booted in QEMU."""
