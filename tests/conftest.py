"""Fixtures shared by the test modules.

The tests mirror the package: ``tests/test_<package>[_<module>][_<aspect>].py`` tests ``accelport/<package>/``
(or the top-level module ``accelport/<package>.py``), ``<module>`` narrowing it to one file of the package and
``<aspect>`` naming a cross-cutting concern of it. So ``test_main_job.py`` is ``accelport/main_job/``,
``test_bench_journal.py`` is ``accelport/bench/journal.py``, ``test_runners_conformance.py`` is the runners'
conformance matrix, ``test_cli_hostile_inputs.py`` the CLI's refusals, ``test_benchmark_scripts.py``
``benchmarks/``. ``test_verdict.py`` tests the run's verdict (``parity.py``, ``proofs.py``) end to end.
Helpers that are not tests: ``checkpoints.py``, ``eval_helpers.py``, ``simdevice_probe.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from accelport.preprocess import DEFAULT_SAMPLES_DIR

from checkpoints import seeded_state_dict, write_all_formats

SAMPLES = DEFAULT_SAMPLES_DIR  # accelport/samples, installed with the package
FULL_MATRIX_ENV = "ACCELPORT_FULL_MATRIX"


def pytest_collection_modifyitems(config, items):
    """``zoo_full`` cells (the whole conformance matrix, minutes of exports and compiles) run only when asked
    for: ``-m zoo_full`` (or any -m expression naming it) or ``ACCELPORT_FULL_MATRIX=1``. The default command
    (``python -m pytest -q``, what CI runs) skips them; ``slow`` keeps its meaning and still runs by default."""
    if "zoo_full" in (config.getoption("markexpr") or "") or os.environ.get(FULL_MATRIX_ENV) == "1":
        return
    skip = pytest.mark.skip(reason=f"full conformance matrix: run with -m zoo_full or {FULL_MATRIX_ENV}=1")
    for item in items:
        if "zoo_full" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def short_load_windows():
    """Timed blocks shorter than the load window are padded to it (0.25 s by default, for a user's few timings);
    the suite times hundreds of millisecond blocks, so it uses 0.05 s, in its subprocesses too. Only
    test_reliability judges load, and it puts the default back."""
    from accelport.machine_load import WINDOW_ENV

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(WINDOW_ENV, os.environ.get(WINDOW_ENV, "0.05"))
        yield


@pytest.fixture(scope="session", autouse=True)
def allocator_as_the_cli_sets_it():
    """The CLI sets the allocator once per process (accelport/allocator.py); the suite calls it in-process from
    many tests, so it is set once up front: every environment block the suite writes and compares then records
    the same allocator, whichever test ran first."""
    from accelport.allocator import configure_allocator

    configure_allocator()
    yield


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
def seeded_weights(checkpoint_files) -> Path:
    """The seeded weights as a .safetensors file, what --weights takes."""
    return checkpoint_files["safetensors"]


@pytest.fixture(scope="module")
def seeded_model(seeded_state) -> torch.nn.Module:
    """convnextv2_atto with the seeded weights, in eval mode: one per module, as some modules convert it."""
    model = timm.create_model("convnextv2_atto", pretrained=False)
    model.load_state_dict(seeded_state)
    return model.eval()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): hundreds of
    small ops stall on OpenMP barriers on a shared 2-core machine (up to 10x slower, measured); no result here
    depends on the thread count."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory) -> Path:
    """Exports and compiled packages of a module go to a temporary cache, never the user's ~/.cache/accelport
    (``ACCELPORT_CACHE_DIR``, the default of every runner not given a ``cache_dir``)."""
    path = tmp_path_factory.mktemp("accelport_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACCELPORT_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def sample_paths():
    return sorted(p for p in SAMPLES.iterdir() if p.suffix in (".jpg", ".png"))


@pytest.fixture(scope="session")
def two_images(sample_paths):
    return [str(SAMPLES / "chelsea.jpg"), str(SAMPLES / "camera.png")]


def rng_array(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


NOISY_FC2 = "stages.2.blocks.1.mlp.fc2.weight"


@pytest.fixture(scope="session")
def noisy_fc2_weights(tmp_path_factory, seeded_state) -> Path:
    """The seeded weights with 10 % noise in ``stages.2.blocks.1.mlp.fc2.weight``: a port that fails fp32 parity
    and whose first divergent module is that fc2 (for --target-weights)."""
    from safetensors.torch import save_file

    state = dict(seeded_state)
    weight = state[NOISY_FC2]
    noise = torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))
    state[NOISY_FC2] = weight + 1e-1 * weight.abs().mean() * noise
    path = tmp_path_factory.mktemp("noisy_fc2") / "noisy.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path

