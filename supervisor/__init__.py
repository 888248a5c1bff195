"""gpu-server supervisor: the HTTP process of a GPU node. Never imports torch."""

__version__ = "0.1.0"
