"""The ``ops-platform`` command (see ``main``)."""

from ops_platform.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
