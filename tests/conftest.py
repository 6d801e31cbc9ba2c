import os
from pathlib import Path

import pytest

from ferlab.data import LOCAL_COPY
from tests.synthetic import write_parquet_source


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # every test gets the shared array cache of this session, never the user's
    monkeypatch.setenv("FERLAB_CACHE", str(tmp_path_factory.getbasetemp() / "ferlab-cache"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "hf-datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory) -> Path:
    """A FER-layout parquet folder: 30 / 8 / 8 generated images per class."""
    return write_parquet_source(tmp_path_factory.mktemp("tinyfer"), (30, 8, 8))


def pytest_collection_modifyitems(config, items):
    if LOCAL_COPY.is_dir() and not os.environ.get("FERLAB_SKIP_REALDATA"):
        return
    skip = pytest.mark.skip(reason=f"local FER2013 copy not found at {LOCAL_COPY}")
    for item in items:
        if "realdata" in item.keywords:
            item.add_marker(skip)
