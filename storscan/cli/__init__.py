"""Command-line interface: thin wrappers over the library.

``base`` holds the app, shared options and the exit-code mapping; importing ``readonly`` and
``maintain`` registers their commands, in the order ``--help`` lists them.
"""

from storscan.cli import maintain, readonly
from storscan.cli.base import app, main

__all__ = ["app", "main", "maintain", "readonly"]
