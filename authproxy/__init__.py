"""authproxy: an authentication proxy daemon in front of arbitrary upstream services."""

__version__ = "0.1.0"
