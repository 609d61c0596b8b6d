"""clbench: continual-learning benchmark suite for language models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("clbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
