"""--dtype int8: each engine's own quantiser end to end, the calibration record, the refusals, a weight fault."""

from __future__ import annotations

import importlib.util
import json
import logging
import platform

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import accelport
from accelport.cli import main
from accelport.preprocess import DEFAULT_SAMPLES_DIR
from accelport.runners.compile import int8_float_remainder

MODEL = "test_convnext2"
FAULTY = "stem.0.weight"  # on the main path (random init scales the blocks down to ~1e-6)


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in modules)


ENGINES = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "onnx", "nncf"), "compile": ("torchao",)}


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("accelport_cache")
        patch.setenv("ACCELPORT_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def weights_files(tmp_path_factory):
    """A random-init checkpoint of the tiny model, and a copy with 1 % noise in one weight (fails fp32)."""
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in timm.create_model(MODEL, pretrained=False).state_dict().items()}
    root = tmp_path_factory.mktemp("int8_weights")
    noisy = dict(state)
    noise = torch.randn(state[FAULTY].shape, generator=torch.Generator().manual_seed(1))
    noisy[FAULTY] = state[FAULTY] + 1e-2 * state[FAULTY].abs().mean() * noise
    files = {"clean": root / "clean.safetensors", "noisy": root / "noisy.safetensors"}
    save_file(state, str(files["clean"]))
    save_file(noisy, str(files["noisy"]))
    return files


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino",
                                     pytest.param("compile", marks=pytest.mark.zoo_full)])  # compile: ~60 s of Inductor
def test_int8_runs_through_the_engines_quantiser_and_records_its_calibration(tmp_path, runtime, weights_files,
                                                                              two_images, capfd):
    if not _installed(*ENGINES[runtime]):
        pytest.skip(f"needs {', '.join(ENGINES[runtime])}")
    calibration = [str(DEFAULT_SAMPLES_DIR / "astronaut.jpg"), str(DEFAULT_SAMPLES_DIR / "coffee.jpg")]
    result = accelport.run(model=MODEL, weights=str(weights_files["clean"]), device="cpu", runtime=runtime,
                           dtype="int8", images=tuple(two_images), calibration=tuple(calibration), iters=1, warmup=0,
                           out_dir=str(tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    target = summary["target"]
    assert result.passed and summary["criteria"]["precision"] == "int8"
    assert target["calibration_images"] == 2 and target["calibration_source"] == ", ".join(calibration)
    assert target["calibration_overlap"] == 0 and target["quantizer"].startswith(("onnxruntime.", "nncf.", "torchao."))
    said = (f"int8 by {target['quantizer']}, calibrated on 2 image(s) from {', '.join(calibration)}; 0 of the judged "
            "images were also calibration images")  # a passing run says what its quantiser saw, not only summary.json
    assert said in (tmp_path / "report.md").read_text() and said in (tmp_path / "accuracy_compare.log").read_text()
    if runtime == "compile":  # the PT2E package, built (not from the cache) for this checkpoint and calibration
        assert [e["package_cache_hit"] for e in target["setup_events"] if e["step"] == "shape"] == [False]
        assert target["compile_mode"] == "aot-inductor" and target["freezing"] is True
        assert target["int8_float_remainder"] == int8_float_remainder()  # bf16 where the CPU multiplies bf16, else fp32
        assert target["compile_path"].endswith(f"float remainder in {int8_float_remainder()}")
    else:
        assert target["int8_cache_hit"] is False and target["effective_precision"] == "int8"
    assert summary["structural_proof"]["status"] == "passed"  # the same engine in strict fp32
    assert summary["parity"]["worst_sample_rel_l2"] > 1e-3  # quantised: not fp32 in disguise
    if runtime == "onnxruntime" and platform.machine().lower() in ("x86_64", "amd64"):
        # read back from ONNX Runtime's optimised graph: every quantised convolution fused into an int8 kernel
        assert target["compute_layers"]["int8"] > 0 and target["compute_layers"]["float"] == 0
    if runtime == "openvino":  # read back from the compiled graph: its convolutions execute in int8
        assert target["compute_layers"]["int8"] > 0
        assert target["quantizer_settings"]["model_type"] == "TRANSFORMER"  # ConvNeXt's LayerNorm blocks
        assert target["quantizer_settings"]["smooth_quant"] is False  # 2 calibration images: it would overfit
    assert "Statistics collection" not in capfd.readouterr().out  # NNCF's progress bars stay off stdout


@pytest.mark.skipif(not _installed("onnxruntime", "onnx"), reason="needs onnxruntime and onnx")
def test_shared_initializers_get_their_own_copy_and_the_outputs_stay_the_same(tmp_path):
    import numpy as np
    import onnx
    import onnxruntime as ort

    from accelport.runners.onnx_export import export_onnx
    from accelport.runners.quantize import initializers_behind_identities

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3))
    with torch.no_grad():
        for conv in (net[0], net[2]):
            conv.bias.zero_()  # equal biases: the TorchScript exporter shares them through Identity nodes
    path = export_onnx(net.eval(), (3, 8, 8), "fp32", tmp_path, "torchscript").path  # accelport's own export
    model = onnx.load(str(path))
    initializers = {t.name for t in model.graph.initializer}
    shared = sum(n.op_type == "Identity" and n.input[0] in initializers for n in model.graph.node)
    assert shared >= 1, "the exporter no longer shares equal tensors: this test needs another way to make them"
    assert initializers_behind_identities(model) == shared
    assert not any(n.op_type == "Identity" for n in model.graph.node)
    onnx.checker.check_model(model)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    before = ort.InferenceSession(str(path)).run(None, {"input": x})[0]
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"input": x})[0]
    assert np.array_equal(before, after)


@pytest.mark.skipif(not _installed("onnxruntime", "onnx"), reason="needs onnxruntime and onnx")
def test_onnx_runtime_int8_layers_left_in_float_are_counted_and_warned(tmp_path, weights_files, two_images,
                                                                       monkeypatch, caplog):
    from accelport.runners import quantize

    monkeypatch.setattr(quantize, "ort_activation_type", lambda: "QInt8")  # what x86's QDQ fusion does not take
    monkeypatch.setattr(quantize, "initializers_behind_identities", lambda model: 0)  # biases left shared
    with caplog.at_level(logging.WARNING, logger="accelport.runners.onnxruntime"):
        accelport.run(model=MODEL, weights=str(weights_files["clean"]), device="cpu", runtime="onnxruntime",
                      dtype="int8", images=tuple(two_images), iters=1, warmup=0, out_dir=str(tmp_path))
    layers = json.loads((tmp_path / "summary.json").read_text())["target"]["compute_layers"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert layers["float"] > 0 and f"{layers['float']} in float" in caplog.text


def test_a_weight_fault_that_fails_fp32_fails_the_int8_run(tmp_path, weights_files, two_images):
    if not _installed(*ENGINES["onnxruntime"]):
        pytest.skip("needs onnxruntime, onnx")
    result = accelport.run(model=MODEL, weights=str(weights_files["clean"]),
                           target_weights=str(weights_files["noisy"]), device="cpu", runtime="onnxruntime",
                           dtype="int8", images=tuple(two_images[:1]), iters=1, warmup=0, out_dir=str(tmp_path))
    proof = result.summary["structural_proof"]
    assert not result.passed and proof["status"] == "failed"
    assert not proof["parity"]["passed"]  # the fault is caught at fp32 precision, whatever int8's own noise hides


def test_weights_holding_nan_that_the_quantiser_cannot_calibrate_are_named_not_blamed_on_the_engine(
        tmp_path, weights_files, two_images, capsys):
    """ONNX Runtime's quantiser fails on a NaN weight ("scale issue"): that read as the engine's failure (exit 2 "no
    route works"), not the port's, while fp32 and OpenVINO int8 fail it naming the tensor."""
    if not _installed(*ENGINES["onnxruntime"]):
        pytest.skip("needs onnxruntime, onnx")
    state = load_file(str(weights_files["clean"]))
    state[FAULTY] = state[FAULTY].clone()
    state[FAULTY].view(-1)[3] = float("nan")
    save_file(state, str(tmp_path / "nan.safetensors"))
    code = main(["run", "--model", MODEL, "--weights", str(weights_files["clean"]), "--target-weights",
                 str(tmp_path / "nan.safetensors"), "--device", "cpu", "--runtime", "onnxruntime", "--dtype", "int8",
                 "--images", two_images[0], "--iters", "1", "--warmup", "0", "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and f"--target-weights {tmp_path / 'nan.safetensors'}: {FAULTY} hold(s) NaN/Inf" in err
    assert "the port is broken" in err and "Traceback" not in err


@pytest.mark.parametrize("name, expected", [("test_convnext2", True), ("test_vit", True), ("test_resnet", False)])
def test_nncf_model_type_follows_the_blocks_norm_and_attention(name, expected):
    """TRANSFORMER for LayerNorm or attention blocks (measured faster and closer to fp32 on ConvNeXt), NNCF's
    default for BatchNorm CNNs (measured slower with TRANSFORMER on resnet18)."""
    from accelport.runners.quantize import transformer_style

    assert transformer_style(timm.create_model(name, pretrained=False)) is expected


def test_smooth_quant_is_used_from_its_calibration_size_and_recorded(tmp_path, weights_files, two_images, monkeypatch):
    """The SmoothQuant branch (NNCF's own default, for 300+ calibration images) builds and is recorded; the
    threshold is lowered here so that two images reach it."""
    if not _installed(*ENGINES["openvino"]):
        pytest.skip("needs openvino, onnx, nncf")
    from accelport.runners import quantize

    monkeypatch.setattr(quantize, "SMOOTH_QUANT_MIN_IMAGES", 2)
    calibration = [str(DEFAULT_SAMPLES_DIR / "astronaut.jpg"), str(DEFAULT_SAMPLES_DIR / "coffee.jpg")]
    accelport.run(model=MODEL, weights=str(weights_files["clean"]), device="cpu", runtime="openvino", dtype="int8",
                  images=tuple(two_images), calibration=tuple(calibration), iters=1, warmup=0, out_dir=str(tmp_path))
    settings = json.loads((tmp_path / "summary.json").read_text())["target"]["quantizer_settings"]
    assert settings["smooth_quant"] is True and settings["model_type"] == "TRANSFORMER"


def test_eager_int8_is_refused_naming_the_runtimes_that_quantise(tmp_path, capsys):
    code = main(["run", "--model", MODEL, "--device", "cpu", "--runtime", "eager", "--dtype", "int8",
                 "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--runtime eager --dtype int8" in err and "onnxruntime" in err and "openvino" in err
    assert "Traceback" not in err and not (tmp_path / "summary.json").exists()


def test_calibration_with_a_float_dtype_is_a_usage_error(tmp_path, capsys):
    code = main(["run", "--model", MODEL, "--device", "cpu", "--dtype", "fp32", "--calibration",
                 str(DEFAULT_SAMPLES_DIR), "--out-dir", str(tmp_path)])
    assert code == 2 and "--calibration" in capsys.readouterr().err


@pytest.mark.parametrize("make, culprit, loads_model", [
    (lambda root: root / "missing", "--calibration {root}/missing: no such file", False),
    (lambda root: (root / "empty").mkdir() or root / "empty", "--calibration {root}/empty: no image files", False),
    (lambda root: (root / "x.jpg").write_text("not an image") and root / "x.jpg", "{root}/x.jpg: not a readable", True),
])
def test_bad_calibration_is_one_error_naming_it_not_every_export_route(tmp_path, capsys, monkeypatch, make,
                                                                       culprit, loads_model):
    """A missing or empty --calibration is refused before the model is loaded; an unreadable image as soon as the
    quantiser reads it, as itself (it once came out as "no route works", after exporting on three routes)."""
    import accelport.job.context

    if not _installed(*ENGINES["onnxruntime"]):
        pytest.skip("needs onnxruntime")
    if not loads_model:
        monkeypatch.setattr(accelport.job.context, "load_model", lambda *a, **k: pytest.fail("model was loaded"))
    code = main(["run", "--model", MODEL, "--device", "cpu", "--runtime", "onnxruntime", "--dtype", "int8",
                 "--calibration", str(make(tmp_path)), "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and culprit.format(root=tmp_path) in err and "route" not in err and "Traceback" not in err
    assert not (tmp_path / "out" / "summary.json").exists()


def test_an_int8_failure_with_an_intact_port_names_the_quantiser_and_the_random_init(tmp_path, two_images):
    """No --weights (random init) and criteria no int8 engine meets: the fp32 proof passes, so the log reads the
    failure as int8's own error, says how many images calibrated it and that random-init ranges prove little."""
    if not _installed(*ENGINES["onnxruntime"]):
        pytest.skip("needs onnxruntime")
    result = accelport.run(model=MODEL, device="cpu", runtime="onnxruntime", dtype="int8", images=tuple(two_images),
                           calibration=(str(DEFAULT_SAMPLES_DIR / "astronaut.jpg"),), iters=1, warmup=0,
                           criteria=(("max_rel_l2", "1e-9"),), out_dir=str(tmp_path))
    log = (tmp_path / "accuracy_compare.log").read_text()
    assert not result.passed and result.summary["structural_proof"]["status"] == "passed"
    assert "int8's own error (the quantiser and its calibration (1 calibration image(s)); with RANDOM-INIT" in log


@pytest.mark.parametrize("runtime", ["eager", "compile"])
def test_layers_refuses_int8_where_no_module_outputs_exist_and_says_what_to_do(tmp_path, capsys, runtime):
    code = main(["layers", "--model", MODEL, "--device", "cpu", "--runtime", runtime, "--dtype", "int8",
                 "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and f"--runtime {runtime}" in err and "openvino" in err and "onnxruntime" in err
    assert not (tmp_path / "layers.json").exists()


def test_calibration_that_overlaps_the_judged_images_is_counted_and_warned(two_images, caplog, tmp_path):
    import shutil
    from pathlib import Path

    from accelport.runners.quantize import calibration_overlap

    judged = [Path(p) for p in two_images]
    assert calibration_overlap([str(DEFAULT_SAMPLES_DIR / "horse.png")], judged) == 0 and not caplog.records
    assert calibration_overlap([two_images[0], str(DEFAULT_SAMPLES_DIR / "horse.png")], judged) == 1
    assert "share 1 image" in caplog.text
    assert calibration_overlap([], judged) == 2  # the bundled samples serve both: counted, said at info level
    copy = tmp_path / "renamed.jpg"  # a byte copy under another name is the same image (paths alone counted 0)
    shutil.copyfile(two_images[0], copy)
    assert calibration_overlap([str(copy)], judged) == 1


# bench --dtypes int8 ---------------------------------------------------------------------------------------------
CALIBRATION = (str(DEFAULT_SAMPLES_DIR / "astronaut.jpg"), str(DEFAULT_SAMPLES_DIR / "coffee.jpg"))
FAST_BENCH = ["--iters", "1", "--warmup", "0", "--max-time", "1", "--rounds", "1", "--no-progress", "--no-plot"]


@pytest.fixture(scope="module")
def int8_bench(tmp_path_factory, weights_files, two_images):
    """One sweep: eager and ONNX Runtime in int8 only (the eager fp32 baseline comes with it), batch 1."""
    if not _installed(*ENGINES["onnxruntime"]):
        pytest.skip("needs onnxruntime, onnx")
    out = tmp_path_factory.mktemp("int8_bench")
    code = main(["bench", "--model", MODEL, "--weights", str(weights_files["clean"]), "--device", "cpu",
                 "--runtimes", "eager,onnxruntime", "--dtypes", "int8", "--batch-sizes", "1", "--images",
                 *two_images, "--calibration", *CALIBRATION, "--out-dir", str(out), *FAST_BENCH])
    return code, out, json.loads((out / "bench.json").read_text())


def test_bench_with_an_unreadable_calibration_image_keeps_its_rows_and_names_the_file(tmp_path, two_images,
                                                                                       capsys):
    """The image is found unreadable only when the quantiser loads it: that int8 row says so (no traceback),
    the eager fp32 baseline row of the same sweep is kept (and, passing, makes the exit 0: bench's documented
    rule is "some configuration passed at every batch size")."""
    if not _installed(*ENGINES["onnxruntime"]):
        pytest.skip("needs onnxruntime, onnx")
    (tmp_path / "bad.jpg").write_text("not an image")
    code = main(["bench", "--model", MODEL, "--device", "cpu", "--runtimes", "onnxruntime", "--dtypes", "int8",
                 "--batch-sizes", "1", "--images", *two_images, "--calibration", str(tmp_path / "bad.jpg"),
                 "--no-peers", "--out-dir", str(tmp_path / "out"), *FAST_BENCH])
    err = capsys.readouterr().err
    rows = {r["label"]: r for r in json.loads((tmp_path / "out" / "bench.json").read_text())["rows"]}
    assert code == 0 and "Traceback" not in err and f"{tmp_path / 'bad.jpg'}: not a readable image" in err
    assert rows["onnxruntime int8"]["status"] == "error" and "bad.jpg: not a readable" in rows["onnxruntime int8"][
        "reason"]
    assert rows["eager fp32"]["status"] == "ok"  # the baseline row of the same sweep, kept


def test_bench_int8_point_is_quantised_calibrated_and_proved(int8_bench):
    code, _, document = int8_bench
    rows = {r["label"]: r for r in document["rows"]}
    row = rows["onnxruntime int8"]
    assert code == 0 and row["status"] == "ok" and row["kind"] == "accelport"
    assert row["parity"]["precision"] == "int8" and row["parity"]["passed"]
    assert row["parity"]["worst_sample_rel_l2"] > 1e-3  # quantised, not the fp32 export
    proof = row["parity"]["structural_proof"]  # the same engine in strict fp32, fp32 criteria
    assert proof["status"] == "passed" and proof["criteria"] == "fp32" and proof["worst_sample_rel_l2"] < 1e-4
    assert row["calibration"]["calibration_images"] == 2 and row["calibration"]["calibration_source"] == ", ".join(
        CALIBRATION) and row["calibration"]["quantizer"].startswith("onnxruntime.")
    assert document["settings"]["calibration"] == list(CALIBRATION) and document["settings"]["calibration_overlap"] == 0
    assert document["criteria"]["int8"]["precision"] == "int8"
    assert rows["eager int8"]["status"] == "unsupported" and "onnxruntime" in rows["eager int8"]["reason"]
    assert rows["eager fp32"]["kind"] == "baseline" and row["ratio_vs_eager"] > 0  # the int8 targets' ratio
    assert document["pick"][0]["fastest_by_dtype"]["int8"] == "onnxruntime int8"
    assert not [r for r in document["rows"] if r.get("kind") == "peer"]  # int8 has no peer (bench/peers.py)


def test_run_runtime_auto_int8_takes_the_int8_pick_of_the_bench(int8_bench, weights_files, two_images):
    _, out, _ = int8_bench
    result = accelport.run(model=MODEL, weights=str(weights_files["clean"]), device="cpu", runtime="auto",
                           dtype="int8", images=tuple(two_images[:1]), calibration=CALIBRATION, iters=1, warmup=0,
                           out_dir=str(out))
    auto = result.summary["target"]["auto"]
    assert result.summary["target"]["runtime"] == "onnxruntime" and auto["source"].endswith("bench.json")
    assert result.passed and result.summary["structural_proof"]["status"] == "passed"


def test_a_weight_fault_fails_the_int8_bench_point_through_the_structural_proof(weights_files, two_images):
    """The port (noisy weights) against the reference of the clean ones: the int8 point fails, and the
    structural proof is what says why (int8's own noise may hide a 1 % weight fault)."""
    if not _installed(*ENGINES["onnxruntime"]):
        pytest.skip("needs onnxruntime, onnx")
    from safetensors.torch import load_file

    from accelport.bench.document import reference_outputs
    from accelport.bench.sweep import Configuration, SweepSettings, sweep
    from accelport.criteria import criteria_for
    from accelport.preprocess import data_config_for, load_images, make_transform

    models = {}
    for name in ("clean", "noisy"):
        models[name] = timm.create_model(MODEL, pretrained=False).eval()
        models[name].load_state_dict(load_file(str(weights_files[name])))
    images = load_images(two_images[:1], make_transform(data_config_for(models["clean"], False))).tensor
    reference = reference_outputs(models["clean"], images)
    _, rows = sweep(models["noisy"], images, reference, torch.device("cpu"), [Configuration("onnxruntime", "int8")],
                    (1,), {"int8": criteria_for("int8")}, True,
                    SweepSettings(warmup=0, iters=1, max_time_s=1, progress=False))
    parity = rows[0]["parity"]
    assert rows[0]["status"] == "ok" and not parity["passed"] and "structural_proof" in parity["failed_checks"]
    assert parity["structural_proof"]["status"] == "failed" and not parity["structural_proof"]["passed"]


@pytest.mark.parametrize("flags, culprit", [
    (["--dtypes", "fp32", "--calibration", str(DEFAULT_SAMPLES_DIR)], "--calibration"),
    (["--dtypes", "int8", "--calibration", "/no/such/folder"], "--calibration /no/such/folder"),
    (["--dtypes", "int4"], "--dtypes 'int4'"),
])
def test_bench_int8_usage_errors_name_the_flag(tmp_path, capsys, flags, culprit):
    code = main(["bench", "--model", MODEL, "--device", "cpu", "--out-dir", str(tmp_path), *flags])
    err = capsys.readouterr().err
    assert code == 2 and culprit in err and "Traceback" not in err and not (tmp_path / "bench.json").exists()


def test_int8_has_no_peer_rows_but_float_dtypes_keep_theirs():
    from accelport.bench.peers import peer_names

    assert peer_names(("int8",)) == []
    assert {dtype for _, dtype in peer_names(("fp32", "int8"))} == {"fp32"}


def test_power_int8_is_refused_saying_why_and_what_to_run(tmp_path, capsys):
    code = main(["power", "--model", MODEL, "--device", "cpu", "--runtime", "onnxruntime", "--dtype", "int8",
                 "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--dtype int8" in err and "--dtype fp32" in err
    assert "structural proof" in err and not list(tmp_path.iterdir())


# eval --dtype int8 ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eval_data(tmp_path_factory, weights_files):
    """Two images in ImageNet class folders, labelled from plain timm's own fp32 ranking: one with its top-1 class
    (right), one with its least likely class (wrong), so the reference's accuracy is 1/2 by construction."""
    import shutil

    from safetensors.torch import load_file
    from timm.data import ImageNetInfo

    from accelport.preprocess import data_config_for, load_images, make_transform

    model = timm.create_model(MODEL, pretrained=False).eval()
    model.load_state_dict(load_file(str(weights_files["clean"])))
    names = ("horse.png", "rocket.jpg")
    images = load_images([DEFAULT_SAMPLES_DIR / n for n in names], make_transform(data_config_for(model, False)))
    with torch.no_grad():
        ranking = torch.argsort(model(images.tensor), dim=1, descending=True)
    root, wnids = tmp_path_factory.mktemp("eval_int8_data"), ImageNetInfo("imagenet-1k").label_names()
    for name, label in zip(names, (int(ranking[0, 0]), int(ranking[1, -1])), strict=True):
        (root / wnids[label]).mkdir()
        shutil.copy(DEFAULT_SAMPLES_DIR / name, root / wnids[label] / name)
    return root


def _eval_int8(data, out, weights_files, *extra):
    if not _installed(*ENGINES["onnxruntime"]):
        pytest.skip("needs onnxruntime, onnx")
    code = main(["-q", "eval", "--data", str(data), "--model", MODEL, "--weights", str(weights_files["clean"]),
                 "--device", "cpu", "--runtime", "onnxruntime", "--dtype", "int8", "--workers", "0", "--batch-size",
                 "2", "--no-progress", "--out-dir", str(out), *extra])
    return code, json.loads((out / "eval.json").read_text())


def test_eval_int8_reports_accuracy_and_agreement_with_the_fp32_reference(tmp_path, eval_data, weights_files):
    code, doc = _eval_int8(eval_data, tmp_path, weights_files, "--calibration", *CALIBRATION)
    assert code in (0, 1) and doc["status"] == ("passed" if code == 0 else "failed")
    target = doc["target"]
    assert target["dtype"] == "int8" and doc["criteria"]["precision"] == "int8"
    assert target["effective_precision"] == "int8" and target["calibration_images"] == 2
    assert target["calibration_overlap"] == 0  # calibrated on other images than the dataset's
    accuracy, agreement = doc["accuracy"], doc["agreement"]
    assert accuracy["num_images"] == 2 and accuracy["reference"]["top1_correct"] == 1  # CPU fp32, by construction
    assert accuracy["target"]["top1_correct"] in (0, 1, 2) and "top5" in accuracy["target"]
    assert agreement["top1"] == 1 - agreement["top1_mismatches"] / 2 and "real_top1_mismatches" in agreement
    assert doc["distributions"]["rel_l2"]["max"] > 1e-3  # int8 outputs, not the fp32 export's
    proof = target["structural_proof"]  # the same engine in strict fp32 on the same images
    assert proof["status"] == "passed" and proof["images"] == 2 and proof["worst_sample_rel_l2"] < 1e-4
    assert {"name": "structural_proof", "passed": True}.items() <= doc["checks"][-1].items()
    markdown = (tmp_path / "eval.md").read_text()
    assert "int8" in markdown and "## Accuracy" in markdown and "structural_proof" in markdown
    assert "- int8 by onnxruntime.quantization.quantize_static, calibrated on 2 image(s)" in markdown  # as report.md


def test_an_eval_int8_failing_on_its_own_error_says_so(tmp_path, eval_data, weights_files, capsys):
    """Intact port, int8 judged stricter than int8 can be: the eval fails, the proof passes, and the console and
    eval.md read it as run does (int8's own error, not the port's); it said nothing."""
    code, doc = _eval_int8(eval_data, tmp_path, weights_files, "--calibration", *CALIBRATION,
                           "--criterion", "max_rel_l2=1e-6")
    assert code == 1 and doc["target"]["structural_proof"]["status"] == "passed"
    reading = "the same target in strict fp32 passes, so the weights and layout arrived intact"
    out = capsys.readouterr().out
    assert reading in out and "int8's own error (the quantiser and its calibration (2 calibration image(s)))" in out
    assert reading in (tmp_path / "eval.md").read_text()


def test_a_weight_fault_fails_eval_int8_through_the_structural_proof(tmp_path, eval_data, weights_files, capsys):
    judged_too = next(eval_data.rglob("horse.png"))  # calibrating on a dataset image is said, and recorded
    code, doc = _eval_int8(eval_data, tmp_path, weights_files, "--target-weights", str(weights_files["noisy"]),
                           "--calibration", str(judged_too))
    proof = doc["target"]["structural_proof"]
    assert code == 1 and doc["status"] == "failed" and proof["status"] == "failed" and proof["failed_checks"]
    captured = capsys.readouterr()
    assert doc["target"]["target_weights"] and "FAIL structural_proof" in captured.out
    assert "arrived intact" not in captured.out  # the proof failed: no "own error" reading
    assert doc["target"]["calibration_overlap"] == 1 and "--calibration and --data share 1 image" in captured.err
    # resumed with every image in the journal: the proof runs again on them (it was dropped, and the eval passed)
    code, resumed = _eval_int8(eval_data, tmp_path, weights_files, "--target-weights", str(weights_files["noisy"]),
                               "--calibration", str(judged_too), "--resume")
    assert resumed["run"]["resumed_images"] == 2 and resumed["run"]["evaluated_now"] == 0
    assert code == 1 and resumed["status"] == "failed"
    assert resumed["target"]["structural_proof"]["status"] == "failed"
    assert resumed["target"]["structural_proof"]["images"] == proof["images"]


# compile (PT2E) without compiling ------------------------------------------------------------------------------
@pytest.mark.parametrize("float_remainder", [torch.float32, torch.bfloat16])
def test_pt2e_quantises_conv_and_linear_with_the_x86_inductor_quantizer(float_remainder):
    """The quantisation step of ``--runtime compile --dtype int8`` without Inductor (the end-to-end run is in the
    zoo_full matrix): q/dq pairs around the convolutions and linears, calibrated, close to fp32 but not fp32; with
    a bf16 float remainder (AMX CPUs), the same program under autocast."""
    if not _installed("torchao"):
        pytest.skip("needs torchao (the PT2E flow left torch 2.14)")
    from accelport.runners.quantize import Calibration, export_pt2e_int8

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3),
                                 torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()
    images = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    program, _ = export_pt2e_int8(module, torch.zeros(2, 3, 16, 16), Calibration("test", ("a", "b", "c"), images,
                                                                                "x"), float_remainder=float_remainder)
    top = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert ("wrap_with_autocast" in top) is (float_remainder == torch.bfloat16)
    ops = [str(node.target) for graph in program.graph_module.modules() if isinstance(graph, torch.fx.GraphModule)
           for node in graph.graph.nodes if node.op == "call_function"]  # inside the autocast region too
    assert sum("dequantize_per_channel" in op for op in ops) == 3  # the weights of the 2 convolutions and the linear
    assert any("quantize_per_tensor" in op for op in ops)  # activations, with the ranges calibration observed
    with torch.no_grad():
        expected, got = module(images[:2]), program.module()(images[:2])
    assert got.dtype == float_remainder  # the linear's output: float work in the remainder's dtype
    error = float((got.float() - expected).norm() / expected.norm())
    assert 0 < error < 0.15  # int8 arithmetic, within the int8 criteria's max_rel_l2


def test_a_model_the_x86_quantizer_cannot_annotate_is_refused_naming_where_and_what_to_use():
    """timm's FastViT adds a constant to a convolution's output; torchao's quantizer asserts on that with no
    message, and run said only "no route works (aot-inductor: AssertionError: )"."""
    if not _installed("torchao"):
        pytest.skip("needs torchao (the PT2E flow left torch 2.14)")
    from accelport.errors import RuntimeUnavailableError
    from accelport.runners.quantize import Calibration, export_pt2e_int8

    class ConvPlusConstant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)

        def forward(self, x):
            return (self.conv(x) + 0.5).mean((2, 3))

    images = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with pytest.raises(RuntimeUnavailableError) as excinfo:
        export_pt2e_int8(ConvPlusConstant().eval(), torch.zeros(1, 3, 16, 16),
                         Calibration("test", ("a", "b", "c"), images, "x"))
    message = str(excinfo.value)
    assert message.startswith("--runtime compile --dtype int8: torchao's X86InductorQuantizer cannot annotate "
                              "ConvPlusConstant: AssertionError in x86_inductor_quantizer.py:")
    assert message.endswith("quantise it with --runtime openvino or --runtime onnxruntime instead")


@pytest.mark.parametrize("scale", [1.0, 1e-5])
def test_pt2e_warns_when_calibrated_activations_fall_under_the_quantizers_smallest_scale(scale, caplog):
    """Activations ~1e-5 (what random init makes of efficientnet_b0's deep layers) hit the X86 quantizer's scale
    floor (2^-12) and round to zero: the int8 run then fails for a reason the log must name. Normal ranges: silent."""
    if not _installed("torchao"):
        pytest.skip("needs torchao (the PT2E flow left torch 2.14)")
    from accelport.runners.quantize import Calibration, export_pt2e_int8

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.ReLU(),
                                 torch.nn.Conv2d(8, 8, 3, bias=False)).eval()  # no bias: the output scales too
    images = scale * torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    with caplog.at_level("WARNING", logger="accelport.runners.quantize"):
        program, at_floor = export_pt2e_int8(module, torch.zeros(1, 3, 12, 12),
                                             Calibration("t", ("a", "b"), images, "x"))
    warned = [r.getMessage() for r in caplog.records if "smallest scale" in r.getMessage()]
    assert bool(warned) is (scale < 1)
    with torch.no_grad():
        expected, got = module(images[:1]), program.module()(images[:1])
    error = float((got - expected).norm() / expected.norm())
    assert (error > 0.5) is (scale < 1)  # what the warning is about: the small activations are lost
    if warned:
        assert warned[0].startswith("int8 (PT2E): 2 of 2 activation quantisers")  # both convolutions' inputs
    assert at_floor == ({"clamped": 2, "quantisers": 2, "floor": 2.0 ** -12} if scale < 1 else None)  # kept with the
    # cached package, so a cache hit says it again (test_compile_int8_cache_hit_says_again_what_calibration_found)


class _Shrink(torch.nn.Module):
    """Activations ~1e-5 from the first layer on (what random init makes of efficientnet_b0's deep layers)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1e-5


def test_compile_int8_cache_hit_says_again_what_calibration_found(tmp_path, caplog):
    """The scale-floor finding is kept with the cached package: the second process (a cache hit, no calibration)
    warns again and records it, and a failed run's reading names it (it was silent on a hit, and never in the
    artifacts). A smaller last batch runs in that package, zero-padded: a second package was a second calibration,
    and one run judged two int8 programs."""
    if not _installed("torchao"):
        pytest.skip("needs torchao (the PT2E flow left torch 2.14)")
    from accelport.proofs import own_error_reading
    from accelport.runners import create_runner

    torch.manual_seed(0)
    model = torch.nn.Sequential(_Shrink(), torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 8, 3, bias=False)).eval()
    image = torch.randn(2, 3, 224, 224)
    found = []
    for _ in range(2):
        caplog.clear()
        with caplog.at_level("WARNING", logger="accelport.runners.quantize"), \
                create_runner("compile", model, torch.device("cpu"), "int8", cache_dir=tmp_path,
                              calibration=CALIBRATION[0]) as runner:
            whole = runner.infer(torch.cat([image[:1], torch.zeros_like(image[:1])]))
            assert torch.equal(runner.infer(image[:1]), whole[:1])  # the last, smaller batch: the same program
            runner.infer(image)
            settings = runner.describe()
        shape, padded = [e for e in settings["setup_events"] if e["step"] == "shape"]
        assert padded["padded_into"] == [2, 3, 224, 224] and "package_cache_hit" not in padded
        assert settings["static_shapes"] == [[2, 3, 224, 224]] and settings["recompiles"] == 0
        assert settings["padded_into"] == {"[1, 3, 224, 224]": [2, 3, 224, 224]}
        found.append((shape["package_cache_hit"], settings["int8_scales_at_floor"],
                      any("smallest scale" in r.getMessage() for r in caplog.records)))
    assert [hit for hit, _, _ in found] == [False, True]
    assert found[0][1] == found[1][1] and found[0][1]["clamped"] == 2 and all(warned for _, _, warned in found)
    reading = own_error_reading("int8", 1, False, found[1][1])
    assert "2 of 2 activation quantisers calibrated a range under the quantizer's smallest scale" in reading


def test_compile_int8_without_torchao_is_unavailable_saying_what_to_install(monkeypatch):
    import sys

    from accelport.errors import RuntimeUnavailableError
    from accelport.runners.quantize import export_pt2e_int8

    monkeypatch.setitem(sys.modules, "torchao.quantization.pt2e.quantize_pt2e", None)  # import fails
    with pytest.raises(RuntimeUnavailableError, match="pip install torchao"):
        export_pt2e_int8(torch.nn.Linear(2, 2), torch.zeros(1, 2), None)  # type: ignore[arg-type]


def test_int8_targets_of_issue_13_are_judged_against_a_measured_int8_floor():
    """The int8 floor is ONNX Runtime's int8 GEMM peak (torch's CPU int8 matmul is a reference kernel); a CPU
    without VNNI is slower at int8, not without it, so the AVX2 int8 target stays checkable there."""
    from accelport.bench.roofline import TARGETS, target_reach

    avx2 = {"name": "AVX2", "int8_dot": False, "bf16_arithmetic": False}
    int8_avx2 = next(t for t in TARGETS if t["dtype"] == "int8" and t["isa"] == "avx2")
    reach = target_reach(int8_avx2, avx2, None)
    assert reach.startswith("unknown: no int8 roofline floor") and "no VNNI here" in reach
    assert target_reach(int8_avx2, avx2, 0.12).startswith("reachable: roofline floor 0.120 vs limit 0.25")
    assert "without VNNI" in target_reach(int8_avx2, avx2, 0.3) and target_reach(int8_avx2, avx2, 0.3).startswith(
        "not reachable")
    int8_avx512 = next(t for t in TARGETS if t["dtype"] == "int8" and t["isa"] == "avx512")
    assert target_reach(int8_avx512, avx2, None).startswith("not checkable here")
    assert "VNNI" not in target_reach(int8_avx512, {"name": "AMX", "int8_dot": True}, 0.05)


def test_the_int8_matmul_peak_is_measured_on_onnx_runtimes_int8_gemm():
    from accelport.bench.roofline import matmul_peak

    pytest.importorskip("onnxruntime")
    int8 = matmul_peak(torch.device("cpu"), "int8", max_size=512, repeats=2)
    fp32 = matmul_peak(torch.device("cpu"), "fp32", max_size=512, repeats=2)
    assert int8["kernel"].startswith("onnxruntime MatMulInteger") and int8["size"] in (256, 512)
    # int8 dot products do more operations per cycle than fp32 FMAs on x86 (VNNI: 4.3x fp32 measured on a Zen 4;
    # AVX2's vpmaddubsw ~2x); a reference kernel would be ~100x slower than fp32. Half of fp32 leaves room for noise.
    assert int8["gflops_per_s"] > 0.5 * fp32["gflops_per_s"]
    with pytest.raises(ValueError, match="no int8 matmul peak on meta"):
        matmul_peak(torch.device("meta"), "int8")
    with pytest.raises(ValueError, match="no fp8 matmul peak"):
        matmul_peak(torch.device("cpu"), "fp8")


def test_byte_copies_in_a_calibration_set_count_once(tmp_path, caplog):
    """300 copies of one photo counted as 300 images, switched NNCF's SmoothQuant on and overfitted that image."""
    import shutil

    from accelport.runners.quantize import load_calibration

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(5):
        shutil.copyfile(DEFAULT_SAMPLES_DIR / "chelsea.jpg", folder / f"copy{i}.jpg")
    shutil.copyfile(DEFAULT_SAMPLES_DIR / "coffee.jpg", folder / "other.jpg")
    model = timm.create_model("resnet10t", num_classes=10)
    calibration = load_calibration([str(folder)], model, (3, 224, 224))
    assert len(calibration.paths) == 2 and calibration.images.shape[0] == 2
    assert "4 of 6 files are byte copies of others; calibrating on the 2 distinct image(s)" in caplog.text


class _UnfoldedResidual(torch.nn.Module):
    """MobileViT's pattern: 2x2 patches unfolded from a feature map by reshapes and transposes, then a residual
    linear block; the residual reaches the int8 linear's add post-op in whatever layout Inductor chose."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 4, stride=4)
        self.norm = torch.nn.LayerNorm(16)
        self.fc = torch.nn.Linear(16, 16)
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x):
        x = self.conv(x)
        b, c, h, w = x.shape
        x = x.reshape(b * c * (h // 2), 2, w // 2, 2).transpose(1, 2)
        tokens = x.reshape(b, c, (h // 2) * (w // 2), 4).transpose(1, 3).reshape(b * 4, (h // 2) * (w // 2), c)
        tokens = tokens + self.fc(self.norm(tokens))
        return self.head(tokens.mean((0, 1)).unsqueeze(0))


def _qlinear_addend_strides(code: str) -> list[tuple[int, ...]]:
    """The strides of every int8 linear + add's addend (its 7th argument) in Inductor's generated Python wrapper."""
    import ast

    allocated = {}
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and \
                ast.unparse(node.value.func).endswith("empty_strided_cpu"):
            allocated[node.targets[0].id] = ast.literal_eval(node.value.args[1])
    strides = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("qlinear_pointwise.binary_tensor"):
            addend = node.args[6]
            strides.append(ast.literal_eval(addend.args[2]) if isinstance(addend, ast.Call) else allocated[addend.id])
    return strides


def test_compile_int8_hands_a_transposed_residual_to_the_int8_linear_row_major():
    """torch 2.14's Inductor passed such a residual to oneDNN's qlinear add post-op column-major, where each call
    took 127 ms instead of ~0.3 ms: mobilevit_xxs's int8 package ran 218 ms per image against 9.5 ms fixed."""
    if not _installed("torchao"):
        pytest.skip("needs torchao (the PT2E flow left torch 2.14)")
    import contextlib

    from torch._inductor.utils import run_and_get_code

    from accelport.runners.compile import frozen_inductor
    from accelport.runners.quantize import Calibration, export_pt2e_int8

    torch.manual_seed(0)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    program, _ = export_pt2e_int8(_UnfoldedResidual().eval(), torch.zeros(1, 3, 32, 32),
                                  Calibration("test", ("a", "b", "c"), images, "x"))
    strides = {}
    for fixed in (True, False):
        torch._dynamo.reset()
        with frozen_inductor() if fixed else contextlib.ExitStack() as context:
            if not fixed:  # Inductor's own lowering, frozen as the runner freezes
                context.enter_context(torch.no_grad())
                context.enter_context(torch._inductor.config.patch(freezing=True))
            outputs, code = run_and_get_code(torch.compile(program.module()), images[:1])
        strides[fixed] = _qlinear_addend_strides(code[0])
    torch._dynamo.reset()
    assert strides[True] and all(stride[-1] == 1 for stride in strides[True])  # row-major addend
    assert any(stride[-1] != 1 for stride in strides[False]), \
        "this torch hands the addend row-major by itself: accelport's row_major_qlinear_addend is no longer needed"


def _openvino_has_bf16() -> bool:
    if not _installed(*ENGINES["openvino"]):
        return False
    from accelport.runners.openvino import shared_core

    return "BF16" in shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_openvino_int8_with_its_float_remainder_in_bf16_runs_it_there_and_says_so(tmp_path, weights_files, two_images):
    """--int8-remainder bf16: OpenVINO runs the work between NNCF's int8 layers in bf16 (14 % faster at batch 32 on
    a Zen 5, slower elsewhere: bench measures both). The precision is read back from the compiled model, never
    assumed; the run still passes its int8 criteria and its structural proof in strict fp32."""
    if not _openvino_has_bf16():
        pytest.skip("needs OpenVINO with BF16 on this CPU")
    result = accelport.run(model=MODEL, weights=str(weights_files["clean"]), device="cpu", runtime="openvino",
                           dtype="int8", int8_remainder="bf16", images=tuple(two_images), iters=1, warmup=0,
                           out_dir=str(tmp_path))
    target = result.summary["target"]
    assert result.passed and result.summary["structural_proof"]["status"] == "passed"
    assert (target["int8_remainder"], target["precision_hint"], target["effective_precision"]) == ("bf16", "bf16",
                                                                                                    "int8")
    assert target["compute_layers"]["int8"] > 0
    assert "float work between int8 layers in bf16" in (tmp_path / "report.md").read_text()  # not only in JSON


def test_a_bad_int8_remainder_from_the_api_is_refused_before_any_model_is_built(tmp_path):
    from accelport.errors import UsageError

    with pytest.raises(UsageError, match="--int8-remainder 'BF16': choose one of fp32, bf16"):
        accelport.run(model="no_such_model_anywhere", runtime="openvino", dtype="int8", int8_remainder="BF16",
                      out_dir=str(tmp_path))


@pytest.mark.parametrize("args, said", [
    (["--runtime", "openvino", "--dtype", "fp32", "--int8-remainder", "bf16"],
     "--int8-remainder bf16 applies to --dtype int8 only"),
    (["--runtime", "onnxruntime", "--dtype", "int8", "--int8-remainder", "bf16"],
     "--int8-remainder bf16 does not apply to --runtime onnxruntime: only OpenVINO"),
])
def test_int8_remainder_where_it_does_not_apply_is_refused_naming_it(tmp_path, capsys, args, said):
    assert main(["run", "--model", MODEL, "--device", "cpu", *args, "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err and not (tmp_path / "summary.json").exists()


def test_bench_plans_openvino_int8_with_both_remainders_and_the_pick_carries_the_faster_to_run():
    from accelport.bench.pick import _choose
    from accelport.bench.sweep import plan_configurations
    from accelport.job import Target

    labels = [c.label for c in plan_configurations(("openvino",), ("fp32", "int8"), "auto", (1, 2), (0,))]
    assert labels[1:] == ["openvino fp32", "openvino fp32 2 streams", "openvino int8", "openvino int8 2 streams",
                          "openvino int8 bf16 remainder", "openvino int8 2 streams bf16 remainder"]
    row = {"label": "openvino int8 2 streams bf16 remainder", "runtime": "openvino", "dtype": "int8",
           "channels_last": False, "streams": 2, "micro_batch": 0, "int8_remainder": "bf16", "kind": "accelport",
           "batch_size": 32, "status": "ok", "parity": {"passed": True}, "latency": {"p50_ms": 50.0},
           "images_per_s": 640.0}
    choice = _choose({"rows": [row], "settings": {}}, Target(runtime="auto", dtype="int8", batch_size=32), "bench")
    target = choice.applied_to(Target(runtime="auto", dtype="int8", batch_size=32))
    assert (target.runtime, target.option("streams"), target.option("int8_remainder")) == ("openvino", 2, "bf16")


def test_openvino_options_the_user_gives_win_over_the_pick_or_are_said_unused(caplog):
    """run --runtime auto --int8-remainder bf16 ran the pick's fp32 remainder without a word (and --streams too),
    where a --threads the user gives wins."""
    import logging

    from accelport.bench.pick import AutoChoice
    from accelport.job import Target

    asked = Target(runtime="auto", dtype="int8", batch_size=32).with_options(int8_remainder="bf16", streams=2)
    openvino = AutoChoice("openvino", False, "int8", 32, "bench.json", "fastest", micro_batch=4)
    target = openvino.applied_to(asked)
    assert (target.option("int8_remainder"), target.option("streams"), target.option("micro_batch")) == ("bf16", 2, 4)
    with caplog.at_level(logging.WARNING, logger="accelport"):
        target = AutoChoice("compile", True, "int8", 32, "bench.json", "fastest").applied_to(asked)
    assert (target.runtime, target.options) == ("compile", ())
    assert "--runtime auto picked compile: only OpenVINO takes --int8-remainder bf16, --streams 2; not used" in \
        caplog.text


def test_an_explicit_fp32_remainder_wins_over_a_bf16_pick_and_no_flag_takes_the_pick():
    """`run --runtime auto --int8-remainder fp32` ran the pick's bf16: fp32 was the flag's default, so the flag
    given could not be told from no flag."""
    from accelport.bench.pick import AutoChoice
    from accelport.cli import build_parser
    from accelport.main_job.command import config_from_args

    pick = AutoChoice("openvino", False, "int8", 32, "bench.json", "fastest", int8_remainder="bf16")
    for flag, expected in ((["--int8-remainder", "fp32"], "fp32"), ([], "bf16")):
        args = build_parser().parse_args(["run", "--runtime", "auto", "--dtype", "int8", *flag])
        assert pick.applied_to(config_from_args(args).target).option("int8_remainder") == expected


def test_only_openvino_int8_records_a_float_remainder_and_fp32_is_accepted_anywhere():
    """eager's and ONNX Runtime's records said `int8_remainder: fp32`, an OpenVINO setting they do not have; an
    explicit fp32 (what every engine does) is accepted by all, as --streams 1 is."""
    from accelport.runners import create_runner

    for runtime in ("eager", "onnxruntime")[: 1 + _installed(*ENGINES["onnxruntime"])]:
        model = torch.nn.Conv2d(3, 4, 3)
        settings = create_runner(runtime, model, torch.device("cpu"), int8_remainder="fp32").describe()
        assert "int8_remainder" not in settings and settings["streams"] == 1


def test_the_report_says_when_a_given_option_replaced_the_auto_pick():
    """report.md quoted the pick's bf16-remainder timing two lines after saying the run's float work was fp32."""
    from accelport.main_job.report import _auto_pick_text

    auto = {"source": "logs/bench.json", "reason": "fastest int8 configuration: openvino int8 bf16 remainder",
            "runtime": "openvino", "int8_remainder": "bf16", "streams": 2, "micro_batch": 4, "threads": 2}
    ran = {"runtime": "openvino", "dtype": "int8", "int8_remainder": "fp32", "streams": 2, "micro_batch": 4,
           "threads": 2, "auto": auto}
    assert _auto_pick_text(ran).endswith("; given: --int8-remainder fp32 replaced the pick's bf16 (the figure "
                                         "quoted is the pick's, not what ran)")
    assert _auto_pick_text(ran | {"int8_remainder": "bf16"}) == f"picked by --runtime auto from {auto['source']}: " \
                                                                 f"{auto['reason']}"  # as picked: nothing to say


def test_an_int8_model_that_crashes_openvino_in_a_trial_process_runs_with_its_subgraph_jit_off(tmp_path, monkeypatch,
                                                                                                caplog):
    """OpenVINO 2026.4 corrupted the heap running the int8 EdgeNeXt at a static shape (SIGSEGV/SIGABRT/SIGBUS every
    time, fine with SNIPPETS_MODE=DISABLE): accelport died with no message and no artifacts. The model now runs
    first in a child process; a child killed by a signal turns the JIT off here, says so and records it."""
    if not _installed("openvino", "nncf"):
        pytest.skip("needs OpenVINO and NNCF")
    import subprocess

    import accelport.runners.openvino as ov_runner
    from accelport.runners import create_runner

    crashing = tmp_path / "crash.py"
    crashing.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=4), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3)).eval()
    image = torch.randn(1, 3, 224, 224)

    def settings(cache: str) -> tuple[dict, str]:
        with create_runner("openvino", model, torch.device("cpu"), "int8", cache_dir=tmp_path / cache,
                           calibration=CALIBRATION[0]) as runner:
            runner.infer(image)
            return runner.describe(), runner._config.get("SNIPPETS_MODE", "default")  # compiled with (not readable)

    healthy, mode = settings("real")  # the real trial: nothing crashes, nothing changes
    assert healthy["snippets_disabled"] is None and "DISABLE" not in mode
    monkeypatch.setattr(ov_runner, "TRIAL_SCRIPT", crashing)
    with caplog.at_level(logging.WARNING, logger="accelport"):
        crashed, mode = settings("crash")
    assert "DISABLE" in mode and "crashed a trial process running this int8 model at [1, 3, 224, 224] (SIGSEGV)" in (
        crashed["snippets_disabled"]) and crashed["snippets_disabled"] in caplog.text
    assert crashed["effective_precision"] == "int8"
    assert crashed["compiled_blob_cache"].endswith("snippets-off")  # the blobs it runs, not the trial's
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("the trial's outcome is cached"))
    again, mode = settings("crash")
    assert "DISABLE" in mode and again["snippets_disabled"] == crashed["snippets_disabled"]


def test_a_bench_row_whose_openvino_jit_was_turned_off_says_so(tmp_path, monkeypatch, two_images):
    """bench timed such rows under a plain "openvino int8" label, and run --runtime auto picked from them."""
    if not _installed("openvino", "nncf"):
        pytest.skip("needs OpenVINO and NNCF")
    import accelport.runners.openvino as ov_runner

    crashing = tmp_path / "crash.py"
    crashing.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGABRT)\n")
    monkeypatch.setattr(ov_runner, "TRIAL_SCRIPT", crashing)
    monkeypatch.setenv("ACCELPORT_CACHE_DIR", str(tmp_path / "cache"))
    code = main(["bench", "--model", MODEL, "--device", "cpu", "--runtimes", "openvino", "--dtypes", "int8",
                 "--batch-sizes", "1", "--images", *two_images, "--calibration", CALIBRATION[0], "--no-peers",
                 "--out-dir", str(tmp_path / "out"), *FAST_BENCH])
    rows = {r["label"]: r for r in json.loads((tmp_path / "out" / "bench.json").read_text())["rows"]}
    assert code == 0 and "(SIGABRT), so its subgraph JIT (SNIPPETS_MODE) is off" in rows["openvino int8"][
        "snippets_disabled"]
    assert "| openvino int8 | 1 |" in (markdown := (tmp_path / "out" / "bench.md").read_text())
    assert "OpenVINO's subgraph JIT off: a trial process crashed with it on" in markdown


def test_the_overlap_caution_names_the_flag_of_the_command_that_takes_the_images():
    """eval.md told users to judge on other images "with --images", a flag eval does not have (it takes --data)."""
    from accelport.runners.quantize import quantisation_text

    target = {"dtype": "int8", "calibration_images": 6, "calibration_source": "bundled samples",
              "calibration_overlap": 3, "quantizer": "nncf.quantize"}
    assert quantisation_text(target).endswith("(flatters the verdict: judge on other images with --images)")
    assert quantisation_text(target, "--data").endswith("(flatters the verdict: judge on other images with --data)")
