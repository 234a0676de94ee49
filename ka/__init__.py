"""kernel-agent: turn one fleet repository into booted kernels."""

__version__ = "0.1.0"
