"""sockbroker: a daemon that lends real TCP and UDP sockets over gRPC and REST."""

__version__ = "0.1.0"
__all__ = ["__version__"]
