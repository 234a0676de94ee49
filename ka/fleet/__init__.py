"""The fleet repository as data: the working tree or a commit, the YAML loader, host manifests with
their package and install sections, fleet/infra.yaml and patch series.
"""
