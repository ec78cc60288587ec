"""Suite-wide settings: one torch thread (2-core machines run tests much faster this way, and results are
reproducible), headless matplotlib, and caches kept out of the user's home."""

import os
import tempfile

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
_CACHE = tempfile.mkdtemp(prefix="nmt-tests-")
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_CACHE, "mpl"))
os.environ.setdefault("HF_HOME", os.path.join(_CACHE, "hf"))
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _single_thread(monkeypatch):
    torch.set_num_threads(1)
    # threads=0, the commands' default, would give in-process commands every idle core
    monkeypatch.setattr("nmt.device.auto_threads", lambda *args, **kwargs: 1)
    yield


@pytest.fixture(scope="session")
def digit_model_dir(tmp_path_factory):
    """A small trained model directory (digit words en→fr), trained once per test session."""
    from corpus import trained_digit_model

    return trained_digit_model(tmp_path_factory.mktemp("digit_model"))


@pytest.fixture
def unreachable_hub(monkeypatch):
    """The Hugging Face hub looks online (no offline flags, no proxy) but refuses at once: nothing listens on
    the discard port. Loaders must fail fast with a message naming the offline default."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")


def pytest_collection_modifyitems(items):
    """Tests that need the session's trained model are slow: training it takes most of a minute. The fast tier
    (``pytest -m "not slow"``) then runs without training anything."""
    for item in items:
        if "digit_model_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
