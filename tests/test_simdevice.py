"""accelport's NPU code path on the simulated device (ACCELPORT_SIMULATED_DEVICE=npu, docs/simulated_device.md).

Every check that loads the simulated backend runs in a subprocess (the CLI, or tests/simdevice_probe.py for
in-process measurements): a PrivateUse1 device cannot be unregistered from the pytest process. Expected
latencies come from the device time injected per kernel and per MiB copied, never from accelport's figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from accelport import devices
from accelport.cli import main
from accelport.errors import DeviceError

from checkpoints import MODEL
from eval_helpers import free_port

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
FC2 = "stages.2.blocks.1.mlp.fc2"
QUICK = ["--images", str(SAMPLES / "chelsea.jpg"), "--warmup", "1", "--iters", "2"]
ASCEND_STRICT = {"npu_jit_compile": False, "npu_allow_internal_format": False, "npu_conv_allow_hf32": False,
                 "npu_matmul_allow_hf32": False}


def accelport(env: dict, tmp_path: Path, *args: str, timeout: int = 300, **extra_env: str):
    return subprocess.run([sys.executable, "-m", "accelport", *args], env=dict(env, **extra_env), cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def simulated_device(private_cache) -> tuple[dict, dict]:
    """The environment for a subprocess on the simulated NPU (docs/simulated_device.md), and the in-process
    measurements of tests/simdevice_probe.py: its run builds the library into the accelport cache (once; later
    processes only load it), so no separate build process is spent.

    The backend is loaded only in subprocesses: a registered PrivateUse1 device cannot be unregistered, and the
    other tests expect a process without accelerator.
    """
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", ACCELPORT_SIMULATED_DEVICE="npu")
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "simdevice_probe.py")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return env, json.loads(proc.stdout)


@pytest.fixture
def simulated_device_env(simulated_device) -> dict:
    return simulated_device[0]


@pytest.fixture
def probe(simulated_device) -> dict:
    return simulated_device[1]


def test_without_the_variable_nothing_is_simulated_or_built(monkeypatch):
    import accelport.simdevice.backend as backend

    monkeypatch.delenv(devices.SIMULATED_DEVICE_ENV, raising=False)
    monkeypatch.setattr(backend, "build_and_load", lambda: pytest.fail("built without ACCELPORT_SIMULATED_DEVICE"))
    assert devices.import_torch_npu() is None and "npu" not in devices.available_devices()
    assert torch._C._get_privateuse1_backend_name() == "privateuseone" and "torch_npu" not in sys.modules


def test_a_bad_simulated_device_is_an_error_whatever_the_device(monkeypatch):
    monkeypatch.setenv(devices.SIMULATED_DEVICE_ENV, "garbage")
    with pytest.raises(DeviceError, match="ACCELPORT_SIMULATED_DEVICE='garbage': the only simulated device is 'npu'"):
        devices.resolve_device("cpu")  # it ran to exit 0, unchecked


def test_only_npu_can_be_simulated(monkeypatch):
    monkeypatch.setenv(devices.SIMULATED_DEVICE_ENV, "cuda")
    with pytest.raises(DeviceError, match="ACCELPORT_SIMULATED_DEVICE='cuda'"):
        devices.import_torch_npu()
    assert torch._C._get_privateuse1_backend_name() == "privateuseone"


def test_auto_picks_the_npu_and_summary_records_the_ascend_settings(simulated_device_env, tmp_path):
    log = tmp_path / "torch_npu.jsonl"
    proc = accelport(simulated_device_env, tmp_path, "run", "--device", "auto", *QUICK, "--out-dir", "out",
                     ACCELPORT_SIMULATED_TORCH_NPU_LOG=str(log))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    target = summary["target"]
    assert (target["device_requested"], target["device"], target["precision"]) == ("auto", "npu:0", "fp32")
    assert target["numeric_settings"].items() >= ASCEND_STRICT.items()
    assert "simulated" in summary["environment"]["device_name"] and summary["status"] == "passed"
    assert summary["environment"]["torch_npu"] == "0.0.0+accelport.simulated"  # read "not installed" before
    sets = [(r["name"], r.get("value", r.get("kwargs"))) for r in map(json.loads, log.read_text().splitlines())
            if r["what"] in ("set", "call")]
    assert sets == [("npu.set_compile_mode", {"jit_compile": False}), ("npu.config.allow_internal_format", False),
                    ("npu.conv.allow_hf32", False), ("npu.matmul.allow_hf32", False)]


def test_fp32_fast_turns_hf32_on_and_is_judged_as_fp32_fast(simulated_device_env, tmp_path):
    proc = accelport(simulated_device_env, tmp_path, "run", "--device", "npu", "--fp32-math", "fast",
                     "--model", "vit_tiny_patch16_224", *QUICK, "--out-dir", "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    target, parity = summary["target"], summary["parity"]
    assert (target["device"], target["precision"], target["fp32_math"]) == ("npu:0", "fp32-fast", "fast")
    assert target["numeric_settings"].items() >= {"npu_conv_allow_hf32": True, "npu_matmul_allow_hf32": True,
                                                   "npu_allow_internal_format": False}.items()
    # the TF32-emulated baseline, judged by ratio as half precision (the simulated NPU computes IEEE fp32)
    assert "TF32 emulation" in parity["baseline"]["description"]
    (row,) = parity["baseline"]["per_image"]
    assert 1e-5 < row["baseline_rel_l2"] < 1e-2 and row["target_rel_l2"] < row["baseline_rel_l2"] / 10
    checks = {c["name"]: c for c in parity["checks"]}
    assert checks["max_baseline_rel_l2_ratio"]["value"] == row["rel_l2_ratio"] < 1
    assert checks["max_baseline_rel_l2_ratio"]["threshold"] == parity["criteria"]["max_baseline_ratio"]
    assert summary["status"] == "passed" and summary["structural_proof"]["status"] == "passed"


def test_eval_in_fp32_fast_runs_the_structural_proof_as_run_does(simulated_device_env, tmp_path):
    """TF32/HF32's own error hides weight faults as half precision does: eval judged fp32-fast without the proof."""
    data = tmp_path / "images"
    data.mkdir()
    (data / "chelsea.jpg").write_bytes((SAMPLES / "chelsea.jpg").read_bytes())
    proc = accelport(simulated_device_env, tmp_path, "eval", "--data", str(data), "--device", "npu", "--fp32-math",
                     "fast", "--model", "mobilenetv3_small_050", "--workers", "0", "--no-progress", "--out-dir", "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert doc["criteria"]["precision"] == "fp32-fast" and doc["status"] == "passed"
    proof = doc["target"]["structural_proof"]
    assert (proof["status"], proof["criteria"], proof["images"]) == ("passed", "fp32", 1)
    assert doc["checks"][-1]["name"] == "structural_proof" and doc["checks"][-1]["passed"]


def test_bench_in_fp32_fast_proves_a_port_in_strict_fp32_as_run_does(simulated_device_env, tmp_path, seeded_state):
    """fp32-fast's criteria are 20x looser than strict fp32's: a port 0.5 % off passed bench's fp32-fast row, which
    --pick then recommended (exit 0), while run and eval failed it through the structural proof."""
    reference, port = tmp_path / "reference.safetensors", tmp_path / "port.safetensors"
    save_file(seeded_state, str(reference))
    save_file(dict(seeded_state, **{"head.fc.weight": seeded_state["head.fc.weight"] * 1.005}), str(port))
    proc = accelport(simulated_device_env, tmp_path, "bench", "--device", "npu", "--fp32-math", "fast", "--model",
                     MODEL, "--weights", str(reference), "--target-weights", str(port), "--runtimes", "eager",
                     "--dtypes", "fp32", "--batch-sizes", "1", "--no-peers", "--rounds", "1", *QUICK, "--no-plot",
                     "--out-dir", "out")
    assert proc.returncode == 1, proc.stderr[-3000:]  # nothing passed
    (row,) = [r for r in json.loads((tmp_path / "out" / "bench.json").read_text())["rows"] if r["kind"] != "peer"]
    parity = row["parity"]
    assert parity["precision"] == "fp32-fast" and parity["failed_checks"] == ["structural_proof"]
    assert parity["structural_proof"]["status"] == "failed" and not parity["passed"]


@pytest.mark.parametrize(("variable", "value"), [("ACCELPORT_SIMULATED_DEVICE_COUNT", "0"),
                                                ("ACCELPORT_SIMULATED_DEVICE_COUNT", "1.5"),
                                                ("ACCELPORT_SIMULATED_KERNEL_US", "-5"),
                                                ("ACCELPORT_SIMULATED_COPY_US_PER_MIB", "fast"),
                                                # float() read them as 3 devices and 10 µs
                                                ("ACCELPORT_SIMULATED_DEVICE_COUNT", "٣"),
                                                ("ACCELPORT_SIMULATED_KERNEL_US", "1_0")])
def test_a_bad_simulation_setting_is_an_error_naming_it_before_anything_is_built(monkeypatch, variable, value):
    import accelport.simdevice.backend as backend

    monkeypatch.setenv(devices.SIMULATED_DEVICE_ENV, "npu")
    monkeypatch.setenv(variable, value)
    monkeypatch.setattr(backend, "build_and_load", lambda: pytest.fail("built despite a bad setting"))
    for device in ("auto", "cpu"):  # with --device cpu, a count of 0 was taken without a word
        with pytest.raises(DeviceError, match=f"{variable}='{value}'"):
            devices.resolve_device(device)


@pytest.mark.parametrize("where", ["missing/log.jsonl", "."])
def test_a_torch_npu_log_that_cannot_be_written_is_an_error_naming_it(tmp_path, monkeypatch, where):
    """It was an internal error (exit 3) at the first Ascend setting, mid-run."""
    from accelport.simdevice.fake_torch_npu import LOG_ENV, _Recorder

    monkeypatch.setenv(LOG_ENV, str(tmp_path / where))
    with pytest.raises(DeviceError, match=f"{LOG_ENV}='{tmp_path / where}': cannot be written"):
        _Recorder()


def test_a_simulated_device_that_fails_to_build_is_exit_2_naming_the_compiler_error(tmp_path, monkeypatch, capsys):
    """In-process: a failed build loads nothing, so the pytest process stays without a simulated device."""
    broken = tmp_path / "broken.cpp"
    broken.write_text("int simulated_device( {\n")
    monkeypatch.setenv(devices.SIMULATED_DEVICE_ENV, "npu")
    monkeypatch.setenv("ACCELPORT_SIMULATED_DEVICE_SOURCE", str(broken))
    monkeypatch.setenv("ACCELPORT_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["run", "--device", "npu", "--out-dir", str(tmp_path / "out"), "-q"]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "simulated device" in message and f"{broken}:1:" in message and "error:" in message
    assert torch._C._get_privateuse1_backend_name() == "privateuseone" and not (tmp_path / "out").exists()


def test_device_selection_and_identity(probe):
    selection = probe["selection"]
    assert (selection["auto"], selection["npu"], selection["accelerator"], selection["device_count"]) == (
        "npu:0", "npu:0", "npu", 1)
    assert selection["npu_1_error"] == "--device 'npu:1': only 1 npu device(s) visible (indices 0..0)"
    assert selection["npu_1_exit_code"] == 2


def test_latency_is_the_device_time_and_an_unsynchronised_timer_sees_only_the_enqueue(probe):
    """Fails if accelport stops synchronising: its figure would collapse to the enqueue time.

    No iteration can finish before the device time (kernels x injected time); the fastest one, the least
    disturbed by other processes on the host, stays within a few percent of it.
    """
    latency = probe["latency"]
    device_ms = latency["kernels_per_forward"] * latency["kernel_ms"]  # resnet18: 68 kernels of 3 ms
    assert latency["kernels_per_forward"] > 20
    assert device_ms <= latency["compute"]["min_ms"] <= device_ms * 1.05
    assert latency["unsynchronised_ms"] < 0.5 * device_ms


def test_with_copies_adds_the_host_device_copies_from_pinned_memory(probe):
    latency = probe["latency"]
    copies_ms = (latency["input_bytes"] + latency["output_bytes"]) / 2**20 * latency["copy_ms_per_mib"]
    device_ms = latency["kernels_per_forward"] * latency["kernel_ms"] + copies_ms
    assert copies_ms > 4  # 12 KiB in at 400 ms/MiB
    assert device_ms <= latency["with_copies"]["min_ms"] <= device_ms * 1.05
    assert latency["host_batch_pinned"] and not latency["pageable_pinned"]


def test_pinned_copies_do_not_wait_and_reads_back_do(probe):
    copies = probe["copies"]
    assert copies["queued_ms"] > 80  # five 20 ms kernels in flight
    assert copies["pinned_h2d_ms"] < 0.2 * copies["queued_ms"]
    assert copies["d2h_ms"] >= 0.9 * copies["queued_ms"] and copies["pending_after_d2h_ms"] == 0
    assert copies["d2h_value"] == 6.0  # 1 + five additions: the kernels really ran


def test_device_memory_is_its_own_and_views_alias_it(probe):
    memory = probe["memory"]
    assert memory["allocated_growth"] == 4096
    assert memory["view_is_alias"] and memory["view_shares_memory"] == 64.0  # view row 1 = t[32:64], +2 each
    assert "npu:0 and cpu" in memory["mixed_error"]
    assert memory["model_cpu_input_error"]  # a forgotten .to(device) fails loudly


def test_a_model_that_opens_an_autocast_region_runs_on_the_device(probe):
    autocast = probe["autocast"]
    assert autocast["error"] is None
    assert autocast["max_abs_diff"] < 1e-4  # same CPU kernels behind the device: only op-order noise
    # torch.autocast("npu") casts as on torch_npu/CUDA: matmuls to bf16, normalisations in fp32, the rest untouched
    # (softmax computes fp32 unless given a dtype, fp64 is never lowered, the region's dtype is the one asked for)
    assert autocast["autocast_dtypes"] == {"linear": "torch.bfloat16", "layer_norm": "torch.float32",
                                           "add": "torch.float32", "conv2d": "torch.bfloat16",
                                           "softmax": "torch.float32", "softmax_dtype_given": "torch.bfloat16",
                                           "linear_fp64": "torch.float64", "linear_under_fp16": "torch.float16",
                                           "device": "npu:0"}
    assert autocast["autocast_linear_equals_cpu_bf16"]  # the inputs cast to bf16, then the same CPU kernel


def test_ascend_settings_are_set_then_read_back_exactly(probe):
    ascend = probe["ascend"]
    assert ascend["strict"].items() >= ASCEND_STRICT.items()
    assert ascend["fast"]["npu_conv_allow_hf32"] and ascend["fast"]["npu_matmul_allow_hf32"]
    written = [(c["name"], c.get("value", c.get("kwargs"))) for c in ascend["fast_calls"] if c["what"] != "get"]
    assert written == [("npu.set_compile_mode", {"jit_compile": False}), ("npu.config.allow_internal_format", False),
                       ("npu.conv.allow_hf32", True), ("npu.matmul.allow_hf32", True)]
    assert {c["name"] for c in ascend["strict_calls"] if c["what"] == "get"} == {
        "npu.config.allow_internal_format", "npu.conv.allow_hf32", "npu.matmul.allow_hf32"}


def test_bf16_and_fp16_run_on_the_device_and_pass_their_criteria(probe):
    half = probe["half_precision"]
    assert half["bf16"]["weights"] == "npu:0 torch.bfloat16" and half["fp16"]["weights"] == "npu:0 torch.float16"
    for dtype in ("bf16", "fp16"):
        assert half[dtype]["passed"]
        assert 0.99 < half[dtype]["cosine"] < 1.0  # really computed in half precision


def test_layers_on_the_device_names_the_perturbed_module(simulated_device_env, tmp_path, seeded_state):
    reference, faulty = tmp_path / "reference.safetensors", tmp_path / "faulty.safetensors"
    save_file(seeded_state, str(reference))
    save_file(dict(seeded_state, **{f"{FC2}.weight": seeded_state[f"{FC2}.weight"] * 1.05}), str(faulty))
    proc = accelport(simulated_device_env, tmp_path, "layers", "--device", "npu", "--model", MODEL,
                     "--weights", str(reference), "--target-weights", str(faulty), "--images",
                     str(SAMPLES / "chelsea.jpg"), "--out-dir", "out")
    assert proc.returncode == 1, proc.stderr[-3000:]
    data = json.loads((tmp_path / "out" / "layers.json").read_text())
    assert data["target"]["device"] == "npu:0"
    assert "`npu:0` (accelport simulated NPU 0)" in (tmp_path / "out" / "layers.md").read_text()  # said, as run's
    assert {mode: first["module"] for mode, first in data["first_divergent"].items()} == {"chained": FC2,
                                                                                            "isolated": FC2}
    assert data["memory"]["device_peak_allocated_bytes"] > 1e6  # torch.accelerator's statistics of the device


def test_eval_under_torchrun_takes_one_simulated_npu_per_rank(simulated_device_env, tmp_path):
    data = tmp_path / "images"
    data.mkdir()
    for name in ("chelsea.jpg", "camera.png", "coffee.jpg"):
        (data / name).write_bytes((SAMPLES / name).read_bytes())
    env = dict(simulated_device_env, ACCELPORT_SIMULATED_DEVICE_COUNT="2")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(free_port()), "-m", "accelport", "eval", "--data", str(data), "--device", "npu",
               "--model", "mobilenetv3_small_050", "--workers", "0", "--no-progress", "--batch-size", "2",
               "--out-dir", "out", "-v"]  # -v: every rank logs its device
    proc = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert (doc["run"]["world_size"], doc["run"]["backend"], doc["target"]["device"]) == (2, "hccl", "npu:0")
    assert doc["dataset"]["num_evaluated"] == 3 and doc["status"] == "passed"
    for rank in (0, 1):  # each rank on its own device, hccl served by gloo
        assert f"rank {rank} of 2 (local rank {rank}) on npu:{rank}, backend hccl" in proc.stderr
