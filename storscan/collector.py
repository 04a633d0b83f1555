"""Pausing Python's cycle collector while storscan builds and reads its inventory.

A walk allocates millions of small objects that live to the end of the run and form no
reference cycles; the collector would only traverse them again and again (seconds on a large
registry). Memory is still freed by reference counting. Kept out of ``scan`` so that the CLI
can use it without importing the walk at start-up.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Disable the cycle collector inside the block; worker processes forked there inherit it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
