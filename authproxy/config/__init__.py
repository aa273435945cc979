"""Configuration: the schema (``schema``), unit parsing (``units``), env substitution (``env``), loading (``load``)."""

from authproxy.config.load import load_config, parse_config
from authproxy.config.schema import Config, ListenAddress, Route

__all__ = ["Config", "ListenAddress", "Route", "load_config", "parse_config"]
