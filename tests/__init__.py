"""kernel-agent's tests, by tier: unit (pure), integration (real programs on loopback), e2e (browser, QEMU)."""
