"""The source tree's version (the installed package's is ``importlib.metadata.version("transmem")``)."""

__version__ = "0.1.0"
