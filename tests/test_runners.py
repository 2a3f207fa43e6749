"""Every runtime behind the one Runner interface: same tiny input, parity with the criteria of its precision,
clear errors for what a runtime cannot do, one-off setup kept apart from latency, and the on-disk cache."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from accelport.criteria import criteria_for
from accelport.errors import RuntimeUnavailableError
from accelport.latency import measure_latency
from accelport.parity import compare_outputs
from accelport.preprocess import data_config_for, load_images, make_transform
from accelport.runners import create_runner, runner_supports_streams, runtime_names
from accelport.runners.onnx_export import export_onnx

CPU = torch.device("cpu")


def _openvino_cpu_has(capability: str) -> bool:
    try:
        from accelport.runners.openvino import shared_core
    except ImportError:
        return False
    return capability in shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


# Combinations an engine cannot honour on this machine, and the words its error must contain.
EXPECTED_UNSUPPORTED = {
    ("onnxruntime", "bf16"): "--dtype bf16",
    **({} if _openvino_cpu_has("BF16") else {("openvino", "bf16"): "would silently run f32"}),
}


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return timm.create_model("test_convnext2", pretrained=False).eval()


@pytest.fixture(scope="module")
def tiny_input(tiny_model, two_images):
    config = data_config_for(tiny_model)
    return load_images([Path(p) for p in two_images], make_transform(config)).tensor


@pytest.fixture(scope="module")
def reference(tiny_model, tiny_input):
    with torch.no_grad():
        return tiny_model(tiny_input).numpy()


@pytest.fixture(scope="module", autouse=True)
def cache_dir(private_cache):
    """Passed explicitly to runners, and the default for any that is not: never the user's ~/.cache."""
    return private_cache


def _engine_installed(runtime: str) -> bool:
    module = {"onnxruntime": "onnxruntime", "openvino": "openvino"}.get(runtime)
    return module is None or importlib.util.find_spec(module) is not None


# Compiling costs ~15-25 s per configuration on 2 cores (more with a cold cache); compile fp32 also fills the cache
# the cache test reuses. compile bf16 is in the opt-in full matrix (-m zoo_full): the suite's 5-minute budget, and
# what it does in bf16 (AOTInductor, model cast) is checked without compiling (test_peers: compile_path).
_COMPILE_MARKS = {"fp32": [pytest.mark.slow], "bf16": [pytest.mark.slow, pytest.mark.zoo_full]}
CONFORMANCE = [pytest.param(r, d, marks=_COMPILE_MARKS[d] if r == "compile" else [])
               for r in ("eager", "compile", "onnxruntime", "openvino") for d in ("fp32", "bf16")]


@pytest.mark.parametrize(("runtime", "dtype"), CONFORMANCE)
def test_every_runtime_matches_the_cpu_reference_with_the_criteria_of_its_precision(
        runtime, dtype, tiny_model, tiny_input, reference, cache_dir):
    if not _engine_installed(runtime):
        pytest.skip(f"{runtime} is not installed")
    channels_last = runtime == "compile"  # the compile runtime's fast path; the others pick their own layout
    if (runtime, dtype) in EXPECTED_UNSUPPORTED:
        with pytest.raises(RuntimeUnavailableError, match=EXPECTED_UNSUPPORTED[runtime, dtype]):
            runner = create_runner(runtime, tiny_model, CPU, dtype, channels_last, cache_dir=cache_dir)
            runner.prepare().infer(tiny_input)
        return
    with create_runner(runtime, tiny_model, CPU, dtype, channels_last, cache_dir=cache_dir) as runner:
        output = runner.infer(tiny_input)
        settings = runner.describe()
    assert output.dtype == torch.float32 and tuple(output.shape) == reference.shape
    result = compare_outputs(reference, output.numpy(), criteria_for(dtype), is_classifier=True)
    assert result.passed, [c for c in result.checks if not c.passed]
    assert settings["dtype"] == dtype and settings["runtime"] == runtime
    if "effective_precision" in settings:  # read back from the engine, never assumed
        assert settings["effective_precision"] == dtype
    if runtime == "compile":  # the Inductor path it took, in words (summary.json), naming the route it used
        assert settings["compile_path"].startswith({"aot-inductor": "AOTInductor", "torch.compile:freezing":
                                                    "torch.compile"}[settings["compile_mode"]])
    if (runtime, dtype) == ("compile", "fp32"):  # the module's first compile (its own cache): really frozen
        [shape] = [e for e in settings["setup_events"] if e["step"] == "shape"]
        assert shape["package_cache_hit"] is False and shape["packed_weight_ops"] == _convolutions_and_linears(
            tiny_model)


def _convolutions_and_linears(model: torch.nn.Module) -> int:
    return sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in model.modules())


def test_a_bf16_run_is_not_judged_by_fp32_criteria(tiny_model, tiny_input, reference):
    with create_runner("eager", tiny_model, CPU, "bf16") as runner:
        output = runner.infer(tiny_input).numpy()
    assert compare_outputs(reference, output, criteria_for("bf16"), True).passed
    assert not compare_outputs(reference, output, criteria_for("fp32"), True).passed


@pytest.mark.parametrize(("runtime", "dtype", "channels_last", "device", "words"), [
    ("onnxruntime", "fp32", True, "cpu", "--channels-last"),
    ("onnxruntime", "fp16", False, "cpu", "--dtype fp16"),
    ("openvino", "fp32", True, "cpu", "--channels-last"),
    ("openvino", "fp32", False, "cuda", "--device cpu"),
    ("compile", "fp32", False, "mps", "--runtime eager"),
])
def test_an_unsupported_combination_is_a_clear_error_before_any_work(runtime, dtype, channels_last, device, words,
                                                                     tiny_model):
    if not _engine_installed(runtime):
        pytest.skip(f"{runtime} is not installed")
    with pytest.raises(RuntimeUnavailableError, match=words):
        create_runner(runtime, tiny_model, torch.device(device), dtype, channels_last)


def test_a_missing_engine_says_what_to_install(monkeypatch, tiny_model):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # importing it now raises ImportError
    monkeypatch.delitem(sys.modules, "accelport.runners.onnxruntime", raising=False)
    with pytest.raises(RuntimeUnavailableError, match="pip install onnxruntime"):
        create_runner("onnxruntime", tiny_model, CPU)


def test_every_issue_runtime_is_registered():
    assert {"eager", "compile", "onnxruntime", "openvino"} <= set(runtime_names())


def test_export_and_compile_are_setup_not_latency(tiny_model, tiny_input, cache_dir):
    pytest.importorskip("onnxruntime")
    with create_runner("onnxruntime", tiny_model, CPU, cache_dir=cache_dir) as runner:
        runner.warm_up(tiny_input)
        events_after_warm_up = list(runner.setup_events)
        measure_latency(runner, tiny_input, warmup=1, iters=2)
        assert runner.setup_events == events_after_warm_up  # same shape: nothing one-off happens again
        shape_events = [e for e in events_after_warm_up if e["step"] == "shape"]
        assert [e["shape"] for e in shape_events] == [list(tiny_input.shape)]
        assert "onnx_path" in shape_events[0]
        assert runner.describe()["setup_s"] == pytest.approx(sum(e["seconds"] for e in events_after_warm_up), abs=1e-3)


@pytest.mark.slow
def test_a_second_compile_runner_loads_the_cached_package_instead_of_compiling(tiny_model, tiny_input, reference,
                                                                               cache_dir):
    # The conformance test above compiled this exact configuration into cache_dir (or this one does it now).
    outputs, events = [], []
    for _ in range(2):
        with create_runner("compile", tiny_model, CPU, "fp32", True, cache_dir=cache_dir) as runner:
            outputs.append(runner.infer(tiny_input).numpy())
            events.append([e for e in runner.setup_events if e["step"] == "shape"][0])
    assert events[1]["package_cache_hit"] is True and "compile_s" not in events[1]
    assert events[1]["package"] == events[0]["package"]
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_the_export_cache_is_keyed_by_the_weights(tiny_model, tmp_path):
    pytest.importorskip("onnx")
    first = export_onnx(tiny_model, (3, 32, 32), cache_dir=tmp_path)
    again = export_onnx(tiny_model, (3, 32, 32), cache_dir=tmp_path)
    assert (first.cache_hit, again.cache_hit) == (False, True) and first.path == again.path
    changed = timm.create_model("test_convnext2", pretrained=False).eval()
    changed.load_state_dict(tiny_model.state_dict())
    with torch.no_grad():
        changed.head.fc.bias.add_(1.0)
    other = export_onnx(changed, (3, 32, 32), cache_dir=tmp_path)
    assert not other.cache_hit and other.path != first.path
    assert first.path.with_name(first.path.name + ".key.json").is_file()


@pytest.mark.parametrize(("runtime", "read_back"), [("onnxruntime", "intra_op_num_threads"),
                                                   ("openvino", "inference_num_threads")])
def test_thread_counts_are_applied_and_recorded(runtime, read_back, tiny_model, tiny_input, cache_dir):
    if not _engine_installed(runtime):
        pytest.skip(f"{runtime} is not installed")
    with create_runner(runtime, tiny_model, CPU, threads=1, cache_dir=cache_dir) as runner:
        runner.infer(tiny_input)
        settings = runner.describe()
    assert settings["threads"] == 1 and settings[read_back] == 1


def test_split_bounds_cover_the_batch_in_contiguous_near_equal_parts():
    from accelport.runners.openvino import split_bounds

    assert split_bounds(7, 2) == [(0, 4), (4, 7)]
    assert split_bounds(32, 2) == [(0, 16), (16, 32)]
    assert split_bounds(1, 2) == [(0, 1)]  # fewer parts than streams when the batch is smaller
    assert [stop - start for start, stop in split_bounds(5, 3)] == [2, 2, 1]


def test_openvino_streams_split_a_batch_and_give_the_one_stream_result(tiny_model, tiny_input, reference, cache_dir):
    if not _engine_installed("openvino"):
        pytest.skip("openvino is not installed")
    order = [0, 1, 0]  # an odd batch: parts of 2 and 1 images, each on its own stream
    with create_runner("openvino", tiny_model, CPU, "fp32", threads=2, streams=2, cache_dir=cache_dir) as runner:
        output = runner.infer(tiny_input[order]).numpy()
        settings = runner.describe()
    result = compare_outputs(reference[order], output, criteria_for("fp32"), is_classifier=True)
    assert result.passed, [c for c in result.checks if not c.passed]
    assert settings["streams"] == 2 and settings["num_streams"] == 2  # read back from the compiled model
    assert settings["performance_hint"] == "THROUGHPUT" and settings["inference_num_threads"] == 2
    assert settings["part_batch_sizes"] == [1, 2]
    assert [e.get("parts") for e in settings["setup_events"] if e["step"] == "shape"] == [[2, 1]]


def test_openvino_micro_batches_queue_small_requests_on_the_streams(tiny_model, tiny_input, reference, cache_dir):
    if not _engine_installed("openvino"):
        pytest.skip("openvino is not installed")
    order = [0, 1, 1, 0, 1]
    with create_runner("openvino", tiny_model, CPU, "fp32", threads=2, streams=2, micro_batch=2,
                       cache_dir=cache_dir) as runner:
        output = runner.infer(tiny_input[order]).numpy()
        settings = runner.describe()
    result = compare_outputs(reference[order], output, criteria_for("fp32"), is_classifier=True)
    assert result.passed, [c for c in result.checks if not c.passed]
    assert settings["micro_batch"] == 2 and settings["num_streams"] == 2
    assert [e.get("parts") for e in settings["setup_events"] if e["step"] == "shape"] == [[2, 2, 1]]


@pytest.mark.parametrize(("runtime", "streams", "words"), [
    ("eager", 2, "--streams 2 does not apply to --runtime eager"),
    ("onnxruntime", 2, "--streams 2 does not apply to --runtime onnxruntime"),
    ("openvino", 3, "--streams 3 with 2 thread(s)"),
    ("openvino", 0, "--streams 0: must be between 1 and"),
    ("compile", (1, 4), "--micro-batch 4 does not apply to --runtime compile"),
    ("openvino", (1, 0), "--micro-batch 0: must be between 1 and"),
])
def test_streams_are_refused_where_they_cannot_work(runtime, streams, words, tiny_model):
    if not _engine_installed(runtime):
        pytest.skip(f"{runtime} is not installed")
    streams, micro_batch = streams if isinstance(streams, tuple) else (streams, None)
    with pytest.raises(RuntimeUnavailableError, match=words.replace("(", r"\(").replace(")", r"\)")):
        create_runner(runtime, tiny_model, CPU, threads=2, streams=streams, micro_batch=micro_batch)


def test_runtime_options_belong_to_their_runtime(tiny_model):
    """OpenVINO declares streams/micro-batch; the others accept only their neutral values; a typo is a TypeError."""
    assert runner_supports_streams("openvino") and not runner_supports_streams("eager")
    settings = create_runner("eager", tiny_model, CPU, streams=1, micro_batch=None).describe()
    assert (settings["streams"], settings["micro_batch"]) == (1, None)  # in every runtime's record, as before
    with pytest.raises(TypeError, match="unknown option.*stream"):
        create_runner("eager", tiny_model, CPU, stream=2)


def _signal_stack_is_mapped() -> bool:
    """Whether this thread's signal alternate stack (if any) lies in memory that is still mapped."""
    import ctypes

    class Stack(ctypes.Structure):
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    stack = Stack()
    assert ctypes.CDLL(None, use_errno=True).sigaltstack(None, ctypes.byref(stack)) == 0
    if not stack.ss_sp or stack.ss_flags & 2:  # SS_DISABLE
        return True
    with open("/proc/self/maps") as maps:
        ranges = [[int(x, 16) for x in line.split()[0].split("-")] for line in maps]
    return any(start <= stack.ss_sp < stop for start, stop in ranges)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_openvino_runners_dropped_in_any_order_leave_a_valid_signal_stack(tiny_model, tiny_input, cache_dir):
    """OpenVINO's CPU plugin swaps the thread's signal stack per Core; dropping Cores out of order once left a
    freed one installed, and the next SIGCHLD crashed the test process."""
    import gc

    if not _engine_installed("openvino"):
        pytest.skip("openvino is not installed")
    first = create_runner("openvino", tiny_model, CPU, "fp32", cache_dir=cache_dir).prepare()
    second = create_runner("openvino", tiny_model, CPU, "fp32", threads=2, streams=2, cache_dir=cache_dir).prepare()
    first.infer(tiny_input), second.infer(tiny_input)
    first.close(), second.close()
    del first  # the first one created goes first: not the reverse of creation
    gc.collect()
    del second
    gc.collect()
    assert _signal_stack_is_mapped()


def test_a_runner_computes_on_its_own_thread_count_and_restores_torchs():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(torch.get_num_threads())
            return x * 2

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with create_runner("eager", Probe(), torch.device("cpu"), threads=2) as runner:
            runner.infer(torch.ones(1, 3, 4, 4))
            assert runner.describe()["torch_threads"] == 2
        assert seen == [2] and torch.get_num_threads() == 1  # restored after the call
    finally:
        torch.set_num_threads(before)


def test_the_torch_compile_route_freezes_too(tiny_model, tiny_input, reference, tmp_path, monkeypatch):
    """Freezing that Dynamo never saw packed nothing for months (options={"freezing": True} only reaches Inductor;
    AOTInductor compiled with gradients on): the packed-op count is the proof it happened. The AOTInductor route
    is checked by the conformance test above; this is the fallback route, taken when torch.export refuses."""
    monkeypatch.setattr(torch.export, "export", lambda *_a, **_k: (_ for _ in ()).throw(
        torch._dynamo.exc.Unsupported("refused for this test")))
    # one image: the shape of the peer bench's torch.compile freezing peer (tests/test_peers.py), whose kernels a
    # cold Inductor cache then already holds (the same generated code; 7-13 s less in a fresh CI run)
    with create_runner("compile", tiny_model, CPU, "fp32", True, cache_dir=tmp_path) as runner:
        output = runner.infer(tiny_input[:1]).numpy()
        [event] = [e for e in runner.setup_events if e["step"] == "shape"]
    assert event["export_route"] == "torch.compile"
    # every convolution and linear of test_convnext2 packed for oneDNN (the stem's and the head's included)
    assert event["packed_weight_ops"] == _convolutions_and_linears(tiny_model)
    assert compare_outputs(reference[:1], output, criteria_for("fp32"), True).passed


def test_compile_fallback_route_times_the_frozen_graph_it_compiled(monkeypatch, tmp_path, tiny_model, tiny_input):
    """torch.compile is the route for models torch.export refuses: the graph it traced frozen must be the one the
    timed calls run (a graph traced under no_grad was traced again, unfrozen, at the first call under inference
    mode)."""
    def refuse(*_args, **_kwargs):
        raise torch._dynamo.exc.Unsupported("data-dependent control flow")

    monkeypatch.setattr(torch.export, "export", refuse)
    torch._dynamo.reset()  # other tests' graphs of this model class would count as recompiles
    with torch._dynamo.config.patch(error_on_recompile=True), \
            create_runner("compile", tiny_model, CPU, "fp32", cache_dir=tmp_path) as runner:
        runner.infer(tiny_input)
        runner.infer(tiny_input)
        [shape] = [e for e in runner.describe()["setup_events"] if e["step"] == "shape"]
    assert shape["export_route"] == "torch.compile"
    assert shape["packed_weight_ops"] == _convolutions_and_linears(tiny_model)


def test_openvino_fp16_on_a_cpu_without_it_suggests_bf16_where_the_cpu_has_that(tiny_model):
    """The refusal sent the user to "a CPU with AMX/AVX512-BF16 (bf16)" on a CPU that lists BF16."""
    if not _engine_installed("openvino") or _openvino_cpu_has("FP16"):
        pytest.skip("needs OpenVINO on a CPU without FP16")
    with pytest.raises(RuntimeUnavailableError, match="would silently run f32") as refused:
        create_runner("openvino", tiny_model, CPU, "fp16").prepare()
    has_bf16 = _openvino_cpu_has("BF16")
    assert ("or --dtype bf16, which this CPU has" in str(refused.value)) is has_bf16
    assert ("a CPU with AMX/AVX512-BF16 (bf16)" in str(refused.value)) is not has_bf16
