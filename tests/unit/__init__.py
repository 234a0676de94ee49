"""Pure tests: no process is started and no socket connects (tests/unit/conftest.py refuses both)."""
