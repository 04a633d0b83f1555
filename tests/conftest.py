"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.tree import DEMO_ARCHIVE, extract_archive, load_pushed


@pytest.fixture
def demo_root(tmp_path: Path) -> Path:
    """A fresh copy of the demo registry storage (the directory containing ``docker/``)."""
    return extract_archive(DEMO_ARCHIVE, tmp_path / "demo")


@pytest.fixture
def pushed() -> dict[str, Any]:
    """The push log of the demo archive (``fixtures/demo.pushed.json``)."""
    return load_pushed()
