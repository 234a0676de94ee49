"""The worker and its jobs: accepting commands, parity, build, install, live status, and how each
job ends.
"""
