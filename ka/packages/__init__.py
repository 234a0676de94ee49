"""Kernel packages as files and in repositories: reading them, their facts, signatures, the pacman
and apt repositories, pkgdiff.
"""
