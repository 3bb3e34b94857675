from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from m1lib.settings import get_settings


@pytest.fixture
def task_settings(tmp_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Tasks read settings the way a flow-run subprocess does: from the environment."""
    monkeypatch.setenv("M1_DATA_DIR", str(tmp_data_dir))
    get_settings.cache_clear()
    yield tmp_data_dir
    get_settings.cache_clear()
