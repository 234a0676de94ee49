"""Local processes and ssh: the two doors every command goes through, and output files written all
or nothing.
"""
