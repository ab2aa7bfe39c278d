import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# Tests never touch the network: Hugging Face libraries read only their cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _threads():
    import torch
    torch.set_num_threads(2)
    yield


@pytest.fixture
def built(tmp_path, monkeypatch, caplog):
    """A tiny resnet50 layer-8 cache built from 10 random images under tmp_path."""
    from helpers import build_cache, write_images
    write_images(tmp_path / "imgs")
    assert build_cache(tmp_path) == 0
    caplog.clear()
    return tmp_path
