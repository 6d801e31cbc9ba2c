import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# The whole session writes its caches to a temporary folder, never the user's, and never
# reaches for the network.  Set before anything imports datasets or huggingface_hub: they read
# these once, at import (the offline flag set later left the Hub test retrying for 23 s).
_SESSION_TMP = tempfile.mkdtemp(prefix="ferlab-tests-")
atexit.register(shutil.rmtree, _SESSION_TMP, ignore_errors=True)
os.environ["FERLAB_CACHE"] = os.path.join(_SESSION_TMP, "ferlab-cache")
os.environ["HF_DATASETS_CACHE"] = os.path.join(_SESSION_TMP, "hf-datasets")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Under pytest-xdist (make test runs two workers on CI's 2 cores) each worker keeps to one core:
# two workers at two intra-op threads each would fight over the same cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch
    torch.set_num_threads(1)

from ferlab import load_model  # noqa: E402
from ferlab.data import LOCAL_COPY  # noqa: E402
from ferlab.training import TrainConfig, train  # noqa: E402
from tests.synthetic import write_parquet_source  # noqa: E402


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


@pytest.fixture(scope="session")
def trained_marks(tmp_path_factory):
    """A small cnn trained on generated faces whose class is a bright mark at a known place."""
    src = write_parquet_source(tmp_path_factory.mktemp("marks"), (40, 6, 6), seed=3)
    cfg = TrainConfig(name="marks", architecture="cnn", model={"widths": [8, 16, 32, 32], "hidden": 32},
                      augmentation="none", batch_size=16, epochs=8, lr=3e-3, schedule="none", loader_workers=0)
    return load_model(train(cfg, source=str(src), out_dir=tmp_path_factory.mktemp("run"), progress=False))
