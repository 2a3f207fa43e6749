from __future__ import annotations


import numpy as np
import pytest
import torch

from accelport.preprocess import DEFAULT_SAMPLES_DIR
from checkpoints import seeded_state_dict, write_all_formats

SAMPLES = DEFAULT_SAMPLES_DIR  # accelport/samples, installed with the package


@pytest.fixture(autouse=True)
def isolated_hub(tmp_path_factory, monkeypatch):
    """Every test sees an empty HF cache and an offline Hub, unless it sets them up itself."""
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def restore_fp32_flags():
    """apply_numeric_settings changes process-wide backend flags: put them back after each test."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(scope="session")
def seeded_state():
    return seeded_state_dict()


@pytest.fixture(scope="session")
def checkpoint_files(tmp_path_factory, seeded_state):
    return write_all_formats(tmp_path_factory.mktemp("checkpoints"), seeded_state)


@pytest.fixture(scope="session")
def sample_paths():
    return sorted(p for p in SAMPLES.iterdir() if p.suffix in (".jpg", ".png"))


@pytest.fixture(scope="session")
def two_images(sample_paths):
    return [str(SAMPLES / "chelsea.jpg"), str(SAMPLES / "camera.png")]


def rng_array(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)
