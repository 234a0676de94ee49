"""ka-promote: the cumulative patch, the baseline check, parity against the canonical, and the
kernel import.
"""
