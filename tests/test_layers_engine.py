"""accelport layers on OpenVINO and ONNX Runtime: the engine's tensors found by name are the modules' outputs (checked
against torch, not against accelport), folded BatchNorms get the tensor, and a weight fault is named on fp32 and
int8."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import warnings
from functools import partial

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from accelport.cli import main
from accelport.layers.capture import MODEL_ROW, watched_modules
from accelport.layers.engine import EngineTensors, survey
from accelport.layers.engine_taps import module_of
from accelport.preprocess import DEFAULT_SAMPLES_DIR
from accelport.runners.graph_ops import openvino_ops

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs openvino")

FAULTY = "stages.1.downsample.1"
MODULES = {"stem", "stem.0", "stages", "stages.0", "stages.0.blocks", "stages.0.blocks.0",
           "stages.0.blocks.0.mlp", "stages.0.blocks.0.mlp.fc2", "head", "head.fc"}


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Exports and NNCF's int8 models in this module's own cache: cold, as in CI, and never another run's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACCELPORT_CACHE_DIR", str(tmp_path_factory.mktemp("accelport_cache")))
        yield


@pytest.mark.parametrize("name, module", [
    ("__module.stages.0.blocks.0.mlp.fc2/aten::_convolution/Convolution", "stages.0.blocks.0.mlp.fc2"),
    ("__module.stages.0.blocks.0/aten::add/Add", "stages.0.blocks.0"),
    ("__module.stages.0.blocks.0.drop_path/aten::mul/Multiply", "stages.0.blocks.0"),  # not watched: its parent
    ("/stages/stages.0/blocks/blocks.0/mlp/fc2/Conv/WithoutBiases", "stages.0.blocks.0.mlp.fc2"),
    ("/stages/stages.0/blocks/blocks.0/Add", "stages.0.blocks.0"),
    ("/stem/stem.0/Conv", "stem.0"),
    ("/stages/stages.0/blocks/blocks.0/mlp/act/Mul_1/fq_output_0", "stages.0.blocks.0.mlp"),  # NNCF's naming
    ("/Flatten", ""), ("aten::flatten/Reshape", ""), ("__module.elsewhere/aten::add/Add", ""),  # the root's own
    ("MVN_36", None), ("self.stem.0.weight", None),  # unnamed by the converter, a weight
])
def test_an_operation_belongs_to_the_innermost_module_its_name_spells(name, module):
    assert module_of(name, MODULES) == module


class _ConvBnNet(nn.Module):
    """Conv + BatchNorm + ReLU (conversion folds the norm), a residual block, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU()
        self.block = nn.Sequential(nn.Conv2d(8, 8, 1), nn.GELU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.act(self.bn(self.conv(x)))
        x = x + self.block(x)
        return self.fc(self.pool(x).flatten(1))


def _ov_model(route: str, model: nn.Module, example: torch.Tensor, tmp_path):
    """A route's graph: OpenVINO's direct conversion, or the TorchScript ONNX export read by OpenVINO."""
    import openvino as ov

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if route == "direct":
            return ov.convert_model(model, example_input=example)
        torch.onnx.export(model, (example,), str(tmp_path / "m.onnx"), dynamo=False)
    return ov.Core().read_model(str(tmp_path / "m.onnx"))


def _engine_values(ov_model, places, example):
    import openvino as ov

    operations = {op.get_friendly_name(): op for op in ov_model.get_ordered_ops()}
    outputs = {key: operations[name].output(port) for key, (name, port) in places.items()}
    ov_model.add_outputs(list(outputs.values()))
    compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    results = compiled.create_infer_request().infer({0: example.numpy()})
    by_place = {}
    for position, output in enumerate(ov_model.outputs):
        source = output.get_node().input_value(0)
        by_place[(source.get_node().get_friendly_name(), source.get_index())] = results[compiled.outputs[position]]
    return {key: torch.from_numpy(by_place[place].copy()) for key, place in places.items()}


def _ort_graph_and_values(model: nn.Module, example: torch.Tensor, tmp_path, exporter: str, monkeypatch):
    """ONNX Runtime's runner, as `layers` uses it: its graph's operations and a function of places -> values; the
    export by ``exporter`` (the runner tries TorchScript first, dynamo where TorchScript fails, as for EVA-02)."""
    import accelport.runners.onnxruntime
    from accelport.runners import create_runner

    monkeypatch.setattr(accelport.runners.onnxruntime, "cached_exporters_first", lambda *args: [exporter])
    runner = create_runner("onnxruntime", model, torch.device("cpu"), cache_dir=tmp_path / exporter).prepare()
    device_input = runner.to_device(example)
    runner.forward(device_input)
    return runner.graph_ops(tuple(example.shape)), lambda places: {
        key: torch.from_numpy(value) for key, value in runner.tensors_at(device_input, places).items()}


@pytest.mark.parametrize("model_name, routes", [
    ("convnext", ("onnx", "onnxruntime:torchscript")), ("vit", ("direct",)),
    ("resnet", ("onnx", "onnxruntime:torchscript")), ("efficientnet", ("onnx",)),
    ("conv_bn", ("onnx", "direct", "onnxruntime:torchscript", "onnxruntime:dynamo"))])
def test_every_exposed_tensor_is_its_modules_torch_output(model_name, routes, tmp_path, monkeypatch):
    """Found by name, each engine tensor equals what torch's module returns (fp32), with either converter's naming
    (the ONNX route is the runner's first); a folded BatchNorm owns the tensor named for its convolution."""
    torch.manual_seed(0)
    model = (_ConvBnNet() if model_name == "conv_bn" else
             timm.create_model(f"test_{model_name}", pretrained=False)).eval()
    if model_name in ("resnet", "efficientnet", "conv_bn"):  # non-trivial statistics: a folded norm changes values
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):  # timm's BatchNormAct2d (EfficientNet: norm + SiLU) too
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    size = model.pretrained_cfg["input_size"][1:] if hasattr(model, "pretrained_cfg") else (16, 16)
    example = torch.randn(2, 3, *size)
    watched = watched_modules(model)
    calls, folds = survey(model, example, watched)
    outputs = {}

    def keep(name, module, args, output) -> None:  # returns None: a hook's return value replaces the output
        outputs[name] = output.clone()

    hooks = [m.register_forward_hook(partial(keep, n)) for n, m in watched.items() if n != MODEL_ROW]
    with torch.no_grad():
        model(example)
    for hook in hooks:
        hook.remove()
    for route in routes:
        if route.startswith("onnxruntime:"):  # the runner's own ONNX file and session
            ops, values_at = _ort_graph_and_values(model, example, tmp_path, route.partition(":")[2], monkeypatch)
        else:
            ov_model = _ov_model(route, model, example, tmp_path)
            ops, values_at = openvino_ops(ov_model), partial(_engine_values, ov_model, example=example)
        tensors = EngineTensors(ops, calls, folds)
        assert len(tensors.places) >= len(calls) / (2 if model_name != "conv_bn" else 3), (route, tensors.unexposed)
        values = values_at(tensors.places)
        for name, value in values.items():
            expected = outputs[name]
            assert value.numel() == expected.numel(), (route, name)
            torch.testing.assert_close(value.reshape(expected.shape), expected, rtol=1e-3, atol=1e-4,
                                       msg=f"{route}: {name}")
        if model_name == "conv_bn":  # both converters fold the norm: the convolution has no tensor of its own
            assert folds == {"conv": "bn"}
            assert "bn" in tensors.places and "conv" not in tensors.places
            if route in ("onnx", "onnxruntime:torchscript"):  # the exporter names the folded convolution
                # "/conv/Conv": its tensor goes to bn
                assert "folded into bn" in tensors.unexposed["conv"]


class _FreedConvNet(nn.Module):
    """A convolution whose output is dropped, then a norm of another tensor: Python may give the new tensor the
    freed one's id(), which must not make a fold pair (FastViT's branches did, seen: a false divergence)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        self.conv(x)  # dropped at once
        return self.bn(x * 2)


def test_a_norm_of_a_tensor_that_reuses_a_freed_convolution_outputs_id_is_not_a_fold():
    model = _FreedConvNet().eval()
    ids: list[int] = []
    handles = [model.conv.register_forward_hook(lambda m, a, o: ids.append(id(o))),
               model.bn.register_forward_hook(lambda m, a, o: ids.append(id(a[0])))]
    reused = 0
    for _ in range(20):  # the reuse is likely, not certain: count it, so the test shows it happened
        ids.clear()
        with torch.no_grad():
            model(torch.randn(1, 3, 4, 4))
        reused += ids[0] == ids[1]
    for handle in handles:
        handle.remove()
    for _ in range(20):
        calls, folds = survey(model, torch.randn(1, 3, 4, 4), watched_modules(model))
        assert folds == {} and calls == {"conv": 1, "bn": 1}
    assert reused > 0


def _noisy(state: dict, key: str, scale: float) -> dict:
    noisy = dict(state)
    noise = torch.randn(state[key].shape, generator=torch.Generator().manual_seed(1))
    noisy[key] = (state[key] + scale * state[key].abs().mean() * noise).contiguous()
    return noisy


@pytest.fixture(scope="module")
def convnext_files(tmp_path_factory):
    """The tiny ConvNeXt V2 (test_convnext2), seeded, and a copy with 2 % noise in the convolution of stage 1's
    downsampling, mid-network on the main path (random init scales the blocks' residual branches down to ~1e-6, so
    a fault inside a block would not reach the output)."""
    torch.manual_seed(0)
    model = timm.create_model("test_convnext2", pretrained=False)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    root = tmp_path_factory.mktemp("engine_layers")
    files = {"clean": root / "clean.safetensors", "noisy": root / "noisy.safetensors"}
    save_file(state, str(files["clean"]))
    save_file(_noisy(state, f"{FAULTY}.weight", 0.02), str(files["noisy"]))
    return files, FAULTY


def _openvino_has_bf16() -> bool:
    from accelport.runners.openvino import shared_core

    return "BF16" in shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


_NEEDS_NNCF = pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="needs nncf")


@pytest.mark.parametrize("runtime, dtype, remainder", [
    pytest.param("openvino", "fp32", None, marks=pytest.mark.zoo_full),  # int8's strict fp32 pass covers it
    pytest.param("openvino", "int8", None, marks=_NEEDS_NNCF),
    pytest.param("openvino", "int8", "bf16", marks=[_NEEDS_NNCF, pytest.mark.skipif(
        importlib.util.find_spec("openvino") is None or not _openvino_has_bf16(), reason="needs OpenVINO BF16")]),
    ("onnxruntime", "int8", None)])
def test_engine_layers_name_the_faulty_module(runtime, dtype, remainder, convnext_files, two_images, tmp_path, capsys):
    """End to end: the port's faulty convolution is where the engine program's error starts (fp32: the first
    divergent module; int8, NNCF's or ONNX Runtime's QDQ model: the strict fp32 pass names it, the int8 rows jump
    there), OpenVINO int8 with its float work in bf16 (--int8-remainder, as the run being localised) too."""
    files, fc2 = convnext_files
    out = tmp_path / dtype
    calibration = [str(DEFAULT_SAMPLES_DIR / name) for name in ("astronaut.jpg", "coffee.jpg")] * (dtype == "int8")
    rc = main(["layers", "--model", "test_convnext2", "--device", "cpu", "--runtime", runtime, "--dtype", dtype,
               "--weights", str(files["clean"]), "--target-weights", str(files["noisy"]), "--images", *two_images,
               *(["--calibration", *calibration] if calibration else []),
               *(["--int8-remainder", remainder] if remainder else []), "--out-dir", str(out), "-q"])
    data = json.loads((out / "layers.json").read_text())
    assert data["target"].get("calibration", []) == calibration  # the same images as the run being localised
    if dtype == "int8":  # OpenVINO's read back from the compiled model; no other engine records one
        assert data["target"].get("int8_remainder") == ((remainder or "fp32") if runtime == "openvino" else None)
        said = (out / "layers.md").read_text()  # what it was quantised with, as report.md says it
        assert "int8 by " in said and "calibrated on 2 image(s)" in said
        assert ("float work between int8 layers in bf16" in said) == (remainder == "bf16")
    assert rc == 1 and data["modes"] == ["chained"] and data["target"]["runtime"] == runtime
    rows = {row["module"]: row for row in data["modules"]}
    compared = [row for row in data["modules"] if row["chained"]]
    assert len(compared) >= 0.8 * len(rows)
    assert all(row["note"].startswith("not compared: ") for row in data["modules"] if not row["chained"])
    with open(out / "layers.csv", newline="") as fh:  # the CSV says why too (its blank rows said nothing)
        table = {r["module"]: r for r in csv.DictReader(fh)}
    assert all(table[row["module"]]["note"] == row["note"] for row in data["modules"] if not row["chained"])
    names = [row["module"] for row in data["modules"]]
    before = [row for row in data["modules"][: names.index(fc2)] if row["chained"]]
    if dtype == "fp32":
        assert data["first_divergent"]["chained"]["module"] == fc2
        assert all(not row["chained"]["divergent"] for row in before)
    else:  # 2 % noise is within int8's own rounding here: the strict fp32 pass of the same engine names it, and
        # the int8 program's error jumps at it (quantisation noise alone grows by less than a quarter per row)
        if runtime == "openvino":
            assert data["target"]["compute_layers"]["int8"] > 0  # NNCF's model, read back
        else:
            assert data["target"]["quantizer"].startswith("onnxruntime.quantization")  # its QDQ model
        assert data["structural"]["first_divergent"]["chained"]["module"] == fc2
        assert f"| chained, strict fp32 pass (fp32 criteria) | `{fc2}` |" in (out / "layers.md").read_text()
        if runtime == "openvino":  # ONNX Runtime's QDQ noise alone grows 1.33x at stem.1 (measured): its int8 rows
            # do not single the fault out (1.24x there), the strict fp32 pass above does
            assert rows[fc2]["chained"]["worst_sample_rel_l2"] > 1.25 * before[-1]["chained"]["worst_sample_rel_l2"]
    printed = capsys.readouterr().out
    assert "first divergent module" in printed
    if dtype == "int8":  # no single int8 module crossed a limit: the count says how many had a tensor at all
        assert f"no divergent module ({len(compared)} of {len(rows)} modules compared, all within" in printed


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_engine_layers_refuse_isolated_mode_and_compile_refuses_int8(runtime, capsys):
    assert main(["layers", "--runtime", runtime, "--mode", "isolated", "--device", "cpu"]) == 2
    assert f"--mode isolated --runtime {runtime}" in capsys.readouterr().err
    assert main(["layers", "--runtime", "compile", "--dtype", "int8", "--device", "cpu"]) == 2
    assert "--runtime compile" in capsys.readouterr().err


def test_a_fault_in_a_convolution_openvino_folds_is_named_at_its_norm_with_the_convolution(tmp_path, two_images,
                                                                                        capsys):
    """OpenVINO folds a convolution into the BatchNorm after it: the norm holds both, so a faulty conv showed as
    "first divergent module: layer2.0.bn1" and a reader checked the norm's (intact) parameters; layers.md's module
    table left the convolution's row blank."""
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):  # non-trivial statistics and scales (the random init's are 0/1)
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "clean.safetensors"))
    state["layer2.0.conv1.weight"] = state["layer2.0.conv1.weight"] * 1.2
    save_file(state, str(tmp_path / "faulty.safetensors"))
    assert main(["layers", "--model", "test_resnet", "--device", "cpu", "--runtime", "openvino", "--weights",
                 str(tmp_path / "clean.safetensors"), "--target-weights", str(tmp_path / "faulty.safetensors"),
                 "--images", *two_images, "--out-dir", str(tmp_path / "out"), "-q"]) == 1
    assert "first divergent module: layer2.0.bn1 (with layer2.0.conv1 folded into it) (BatchNorm2d" in \
        capsys.readouterr().out
    said = (tmp_path / "out" / "layers.md").read_text()
    assert "| chained | `layer2.0.bn1` (with layer2.0.conv1 folded into it) | BatchNorm2d |" in said
    assert re.search(r"\| `layer2\.0\.conv1` \| Conv2d \|[ |]*not compared: folded into layer2\.0\.bn1 by", said)


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_layers_refuses_module_tensors_of_a_tapped_program_that_computes_another_output(runtime, convnext_files,
                                                                                        two_images, tmp_path,
                                                                                        monkeypatch, capsys):
    """OpenVINO computed the int8 EdgeNeXt with its module outputs added wrongly from the second stage on (output
    rel L2 1.0 against its own program's), and layers named a module of a correct port: the tapped program's
    output is now checked against the runner's own before any of its tensors is used."""
    import importlib

    from accelport.layers import engine
    from accelport.runners import _REGISTRY

    module, name, _ = _REGISTRY[runtime]
    runner_class = getattr(importlib.import_module(module), name)
    original = runner_class.tensors_at

    def broken_after_tapping(self, device_input, places):
        values = original(self, device_input, places)
        values[engine._TAPPED_OUTPUT] = values[engine._TAPPED_OUTPUT] * 2
        return values

    files, _ = convnext_files
    monkeypatch.setattr(runner_class, "tensors_at", broken_after_tapping)
    rc = main(["layers", "--model", "test_convnext2", "--device", "cpu", "--runtime", runtime, "--weights",
               str(files["clean"]), "--images", *two_images, "--out-dir", str(tmp_path / "out"), "-q"])
    assert rc == 2 and not (tmp_path / "out" / "layers.json").exists()
    assert (f"layers --runtime {runtime}: the engine's program with the module outputs added computes another "
            "model output than its own program (relative L2 1 between them") in capsys.readouterr().err
