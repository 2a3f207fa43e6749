"""Post-training static int8 quantisation, each engine through its own tool (never re-implemented here).

- ONNX Runtime: ``onnxruntime.quantization.quantize_static`` on the cached fp32 ONNX export: QDQ format, int8
  weights per output channel, activations per tensor (uint8 on x86-64, where ONNX Runtime's QDQ fusion wants
  them; int8 elsewhere), MinMax calibration, Conv/MatMul/Gemm only, shared initializers given their own copy.
- OpenVINO: ``nncf.quantize`` on the fp32 OpenVINO model (either route's file), preset PERFORMANCE (symmetric
  int8), ``ModelType.TRANSFORMER`` for models with attention or LayerNorm blocks (NNCF's advice for attention: keeps
  softmax/layer-norm inputs unquantised; for LayerNorm CNNs such as ConvNeXt it was measured faster and closer to
  fp32: ``transformer_style``), its SmoothQuant only with 300+ calibration images (it overfits fewer).
- Both: 7-bit weights on CPUs without VNNI (``reduce_range`` / ``overflow_fix``), where 8-bit ones saturate.
- compile: the PT2E flow from torchao (``torch.export`` -> ``prepare_pt2e`` with ``X86InductorQuantizer`` ->
  calibration -> ``convert_pt2e``), then AOTInductor with freezing lowers the q/dq pairs to oneDNN int8 kernels.
  torch 2.14 no longer ships ``torch.ao.quantization.quantize_pt2e``; torchao is where it lives now.

Calibration: real images (``--calibration PATH``, default the bundled samples) through the model's own timm
eval transform, at the input size of the run. Every quantised artifact is cached under the accelport cache,
keyed by the fp32 model's key (weights digest included), the calibration set's digest and the engine's version.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import platform
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from ..errors import InputError, RuntimeUnavailableError
from ..formatting import one_line
from ..preprocess import DEFAULT_SAMPLES_DIR, data_config_for, discover_images, load_images, make_transform
from ..weights import sha256_of
from .cache import cache_entry, library_versions
from .onnx_export import INPUT_NAME

_logger = logging.getLogger(__name__)

INT8_RUNTIMES = ("compile", "onnxruntime", "openvino")  # the runtimes whose engine has an int8 quantiser
BUNDLED = "bundled samples"


def check_quantizes(runtime: str, dtype: str) -> None:
    """Refuse a quantised precision on a runtime without a quantiser (eager PyTorch has no int8 kernels to run a
    whole timm model; simulating int8 in fp32 would judge something no engine runs)."""
    if runtime not in INT8_RUNTIMES:
        raise RuntimeUnavailableError(f"--runtime {runtime} --dtype {dtype}: {runtime} has no {dtype} engine; "
                                      f"{dtype} is quantised by each engine's own tool: use --runtime "
                                      f"{', '.join(INT8_RUNTIMES)}")


def cpu_has_vnni() -> bool:
    """Whether the CPU has VNNI (AVX512-VNNI, AVX-VNNI or AMX): int8 dot products without int16 saturation."""
    probe = getattr(torch.cpu, "_is_vnni_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


@dataclass(frozen=True)
class Calibration:
    """The images an engine's quantiser observes: where they came from, preprocessed, and their digest."""

    source: str  # the --calibration paths as given, or "bundled samples"
    paths: tuple[str, ...]
    images: torch.Tensor  # [N, C, H, W] fp32, the model's own eval transform
    sha256: str  # of the preprocessed tensor: covers the files, their order and the transform

    def arrays(self) -> list[np.ndarray]:
        """One ``[1, C, H, W]`` float32 array per image: what ONNX Runtime and NNCF feed the model."""
        return [image[None].numpy().astype(np.float32) for image in self.images]

    def to_json(self) -> dict[str, Any]:
        return {"calibration_images": len(self.paths), "calibration_source": self.source,
                "calibration_sha256": self.sha256}


def calibration_inputs(inputs: str | os.PathLike[str] | Sequence[str | Path] | None) -> tuple[str | Path, ...]:
    """The calibration paths as a tuple; one path given alone is one path (its characters were taken as paths,
    and a leading "/" made the root folder a calibration folder)."""
    if isinstance(inputs, str | os.PathLike):
        return (Path(inputs),)
    return tuple(inputs or ())


def discover_calibration(inputs: str | os.PathLike[str] | Sequence[str | Path] | None) -> list[Path]:
    """The calibration image files (the bundled samples when none are given); errors name ``--calibration``."""
    try:
        return discover_images(list(calibration_inputs(inputs)) or [DEFAULT_SAMPLES_DIR])
    except InputError as exc:
        raise InputError(str(exc).replace("--images", "--calibration")) from None


def _distinct_files(paths: list[Path]) -> list[Path]:
    """``paths`` without byte-identical repeats (first kept), and a warning when there were any."""
    seen: dict[str, Path] = {}
    for path in paths:
        try:
            seen.setdefault(sha256_of(path), path)
        except OSError as exc:
            raise InputError(f"--calibration {path}: cannot be read ({exc.strerror or exc})") from None
    if len(seen) < len(paths):
        _logger.warning("--calibration: %d of %d files are byte copies of others; calibrating on the %d distinct "
                        "image(s)", len(paths) - len(seen), len(paths), len(seen))
    return list(seen.values())


def load_calibration(inputs: Sequence[str | Path], model: torch.nn.Module, chw: tuple[int, ...]) -> Calibration:
    """The calibration set for inputs of shape ``[N, *chw]``: timm's train-size transform, else its test size;
    byte-identical files count once (300 copies of one photo were counted as 300 images and switched SmoothQuant
    on, which then overfitted that one image)."""
    paths = _distinct_files(discover_calibration(inputs))
    for test_size in (False, True):
        data_config = data_config_for(model, test_size)
        if tuple(data_config.values["input_size"]) == tuple(chw):
            break
    else:
        raise InputError(f"--calibration: the model's transform gives {data_config.values['input_size']}, the run "
                         f"feeds {list(chw)}; calibrate at the run's input size")
    try:
        images = load_images(paths, make_transform(data_config)).tensor.float().contiguous()
    except InputError as exc:
        raise InputError(f"--calibration: {exc}") from None
    digest = hashlib.sha256(images.numpy().tobytes()).hexdigest()
    source = ", ".join(map(str, inputs)) if inputs else BUNDLED
    _logger.info("int8 calibration: %d image(s) from %s", len(paths), source)
    return Calibration(source, tuple(map(str, paths)), images, digest)


def calibration_overlap(calibration: Sequence[str | Path], judged: Sequence[Path],
                        judged_flag: str = "--images") -> int:
    """How many judged images are also calibration images; a warning when the user chose both sets.

    A quantiser tuned on the very images that judge it flatters the verdict; with neither flag given the bundled
    samples serve both, which is said at info level (there is nothing else to use).
    """
    shared = len(_same_files(discover_calibration(calibration), judged))
    if shared and calibration:
        _logger.warning("--calibration and %s share %d image(s): the int8 verdict is judged on images the "
                        "quantiser was calibrated on; keep the two sets apart", judged_flag, shared)
    elif shared:
        _logger.info("int8: %d judged image(s) are also the calibration set (bundled samples); pass --calibration "
                     "with other images to keep them apart", shared)
    return shared


def _same_files(calibration: Sequence[Path], judged: Sequence[str | Path]) -> set[Path]:
    """The judged files that are a calibration file: the same path, or a byte-identical copy (a copy of the bundled
    samples in a dataset counted 0). Only files of a calibration file's size are read, so a large dataset costs a
    ``stat`` per image."""
    by_size: dict[int, list[Path]] = {}
    for path in {p.resolve() for p in calibration}:
        by_size.setdefault(path.stat().st_size, []).append(path)
    digests: dict[Path, str] = {}

    def digest(path: Path) -> str:
        if path not in digests:
            digests[path] = sha256_of(path)
        return digests[path]

    shared = set()
    for candidate in {Path(p).resolve() for p in judged}:
        try:
            same_size = by_size.get(candidate.stat().st_size, [])
        except OSError:  # unreadable: the run says so where it reads it
            continue
        if candidate in same_size or any(digest(candidate) == digest(path) for path in same_size):
            shared.add(candidate)
    return shared


class CalibrationSource:
    """What a quantising runner was given (``--calibration`` paths, or nothing for the bundled samples), loaded
    once per input size when the engine first needs it."""

    def __init__(self, inputs: str | os.PathLike[str] | Sequence[str | Path] | None):
        self.inputs = calibration_inputs(inputs)
        self._loaded: dict[tuple[int, ...], Calibration] = {}

    def load(self, model: torch.nn.Module, chw: tuple[int, ...]) -> Calibration:
        if chw not in self._loaded:
            self._loaded[chw] = load_calibration(self.inputs, model, chw)
        return self._loaded[chw]

    def to_json(self) -> dict[str, Any]:
        loaded = next(iter(self._loaded.values()), None)
        return loaded.to_json() if loaded else {"calibration_source": ", ".join(map(str, self.inputs)) or BUNDLED}


@dataclass(frozen=True)
class QuantizedFile:
    """A quantised model file in the cache."""

    path: Path
    cache_hit: bool
    seconds: float
    key: str
    tool: str
    settings: dict[str, Any]
    source: dict[str, Any]  # the fp32 export it was quantised from (its own to_json)

    def to_json(self) -> dict[str, Any]:
        return {**self.source, "int8_model": str(self.path), "int8_cache_hit": self.cache_hit,
                "quantize_s": round(self.seconds, 4), "int8_cache_key": self.key, "quantizer": self.tool,
                "quantizer_settings": self.settings}


def _cached(kind: str, fields: dict[str, Any], suffix: str, tool: str, cache_dir: str | Path | None,
            build: Any, source: Any) -> QuantizedFile:
    started = time.perf_counter()
    entry = cache_entry(cache_dir, kind, fields, suffix)
    hit = entry.hit
    if not hit:
        try:
            entry.produce(build)
        except Exception as exc:  # the quantiser's own failure, whatever its type: this engine cannot do int8 here
            raise RuntimeUnavailableError(f"{tool} could not quantise the model to int8: {exc}") from exc
    seconds = time.perf_counter() - started
    _logger.info("int8 (%s): %s in %.2f s: %s", tool, "cache hit" if hit else "quantised", seconds, entry.path)
    settings = {k: v for k, v in fields.items() if not k.endswith(("_key", "sha256"))}
    return QuantizedFile(entry.path, hit, seconds, entry.key, tool, settings, source.to_json())


# Only the compute ops (what NNCF and the X86 Inductor quantizer quantise too): their int8 kernels are the speed-up;
# quantising Add/Mul/Softmax/LayerNorm as well adds error for nothing (deit_tiny: worst rel L2 0.46 -> 0.06).
ORT_OPS = ("Conv", "MatMul", "Gemm")
ORT_SETTINGS = {"format": "QDQ", "per_channel": True, "weight_type": "QInt8", "calibrate_method": "MinMax",
                "op_types_to_quantize": list(ORT_OPS)}


def quantisation_text(target: dict[str, Any], images_flag: str = "--images") -> str | None:
    """What an int8 target (its record, as runners' ``describe`` writes it) was quantised with and calibrated on, and
    how many judged images it had seen: a quantiser calibrated on the images that judge it flatters the verdict; for
    report.md and layers.md. None for other targets."""
    if target.get("dtype") != "int8" or "calibration_images" not in target:
        return None
    overlap = target.get("calibration_overlap")
    seen = "" if overlap is None else (f"; {overlap} of the judged images were also calibration images"
                                       + (f" (flatters the verdict: judge on other images with {images_flag})"
                                          if overlap else ""))
    remainder = target.get("int8_float_remainder") or target.get("int8_remainder")  # compile's rule, or OpenVINO's
    return (f"int8 by {target.get('quantizer', 'the engine')}, calibrated on {target['calibration_images']} "
            f"image(s) from {target.get('calibration_source')}{seen}"
            + (f"; float work between int8 layers in {remainder}" if remainder else "")
            + (f"; {target['snippets_disabled']}" if target.get("snippets_disabled") else ""))


def ort_activation_type(machine: str | None = None) -> str:
    """uint8 activations on x86-64, int8 elsewhere. ONNX Runtime's CPU provider on x86 fuses QDQ convolutions into
    its int8 ``QLinearConv`` reliably with uint8 activations (u8 x s8, VNNI's operand pair); with int8 activations
    many stay float convolutions behind DequantizeLinear nodes. Measured on the AMX Xeon (convnextv2_atto, 2
    threads, 5 rounds): 40 of 40 convolutions fused and 352 ms at batch 32 with uint8, against 13 of 40 and 592 ms
    with int8 (docs/int8.md). ARM's int8 kernels take s8 x s8, ONNX Runtime's default."""
    machine = (machine or platform.machine()).lower()
    return "QUInt8" if machine in ("x86_64", "amd64", "i686", "x86") else "QInt8"


def initializers_behind_identities(model: Any) -> int:
    """Turn every ``Identity`` of an initializer into an initializer of its own, in place; returns how many.

    The TorchScript exporter shares equal tensors (the zero biases of a random init, tied weights) as one
    initializer read through Identity nodes. ONNX Runtime's quantiser then finds a convolution's bias not to be
    an initializer, leaves it float, and the runtime cannot fuse that convolution into ``QLinearConv`` (39 of 40
    on a random-init convnextv2_atto). The values are unchanged; only the graph's wiring is.
    """
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    kept, copied = [], 0
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in initializers:
            tensor = type(initializers[node.input[0]])()
            tensor.CopyFrom(initializers[node.input[0]])
            tensor.name = node.output[0]
            model.graph.initializer.append(tensor)
            copied += 1
        else:
            kept.append(node)
    if copied:
        del model.graph.node[:]
        model.graph.node.extend(kept)
    return copied


class _OrtAdvice(logging.Filter):
    """ONNX Runtime's quantiser logs advice on the root logger ("consider pre-processing before quantization"):
    moved to accelport's debug log, so a run's output carries accelport's own lines only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.WARNING and "onnxruntime" in record.pathname:
            _logger.debug("onnxruntime.quantization: %s", record.getMessage())
            return False
        return True


@contextlib.contextmanager
def _quiet_root_warnings() -> Any:
    advice = _OrtAdvice()
    logging.getLogger().addFilter(advice)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(advice)


def quantize_onnx(source: Any, calibration: Calibration, cache_dir: str | Path | None) -> QuantizedFile:
    """ONNX Runtime's static quantisation of an fp32 ONNX export (QDQ, per-channel int8 weights, activations per
    ``ort_activation_type``).

    ``reduce_range`` (7-bit weights) on CPUs without VNNI: there ORT's x86 int8 kernels multiply u8 x s8 pairs
    into saturating int16 sums (``vpmaddubsw``), which full-range weights overflow; measured here (AVX2 EPYC,
    convnextv2_atto) it is the difference between a worst-image rel L2 of 0.13 and 0.036 (docs/int8.md).
    """
    import onnx
    from onnxruntime import quantization as q

    reduce_range = not cpu_has_vnni()
    activation_type = ort_activation_type()

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self._arrays = iter(calibration.arrays())

        def get_next(self) -> dict[str, np.ndarray] | None:
            array = next(self._arrays, None)
            return None if array is None else {INPUT_NAME: array}

    def build(path: Path) -> None:
        model = onnx.load(str(source.path))
        copied = initializers_behind_identities(model)
        _logger.debug("int8 (ONNX Runtime): %d shared initializer(s) given their own copy", copied)
        # the ONNX Runtime quantiser logs its advice on the root logger; accelport's own log says what it did
        with _quiet_root_warnings():
            q.quantize_static(model, str(path), Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                              activation_type=getattr(q.QuantType, activation_type), weight_type=q.QuantType.QInt8,
                              calibrate_method=q.CalibrationMethod.MinMax, reduce_range=reduce_range,
                              op_types_to_quantize=list(ORT_OPS))

    fields = {"fp32_onnx_key": source.key, "calibration_sha256": calibration.sha256, **ORT_SETTINGS,
              "activation_type": activation_type, "shared_initializers": "copied", "reduce_range": reduce_range,
              **library_versions("onnxruntime")}
    return _cached("int8-onnx", fields, ".onnx", "onnxruntime.quantization.quantize_static", cache_dir, build,
                   source)


def transformer_style(model: torch.nn.Module) -> bool:
    """Whether NNCF should quantise the model as ``ModelType.TRANSFORMER``: it has attention blocks or
    LayerNorm-normalised ones (ConvNeXt, MLP-Mixer), whose element-wise chains around the norms NNCF's transformer
    patterns leave in float instead of quantising each of them.

    Measured by benchmarks/int8_nncf_settings.py (OpenVINO 2026.4, NNCF 3.4, AVX-512 VNNI EPYC, random init,
    SmoothQuant off, calibrated on 2 samples, min cosine to fp32 over all 6, paired speed at batch 8):
    convnextv2_atto 1.32x faster, 0.9951 -> 0.9997; convnext_atto 1.23x faster, 0.9915 -> 0.9989; resnet18
    (BatchNorm) 1.11x slower for the same cosine, so BatchNorm CNNs keep NNCF's default.
    """
    return any(isinstance(module, torch.nn.LayerNorm) or "attention" in type(module).__name__.lower()
               for module in model.modules())


# NNCF's default calibration subset: its SmoothQuant is tuned for at least this many images. With the few
# images a porting check calibrates on (the 6 bundled samples), SmoothQuant fitted their activation ranges and
# broke images outside them: min cosine to fp32 over the 6 samples, calibrated on 2 of them, convnextv2_atto
# 0.920 with it vs 0.9997 without, deit_tiny 0.818 vs 0.988, test_vit 0.860 vs 0.981 (docs/int8.md).
SMOOTH_QUANT_MIN_IMAGES = 300


def quantize_openvino(source: Any, calibration: Calibration, transformer: bool,
                      cache_dir: str | Path | None) -> QuantizedFile:
    """NNCF's post-training quantisation of an fp32 OpenVINO model, saved as IR (``model.xml``) in the cache.

    ``overflow_fix`` ENABLE (7-bit weights in every layer, not only the first) on CPUs without VNNI, for the same
    int16 saturation as ONNX Runtime's ``reduce_range``: measured here (AVX2), convnextv2_atto 0.158 -> 0.060 and
    mobilenetv3_small_050 0.30 -> 0.10 worst-image rel L2 (random init). ``ModelType.TRANSFORMER`` where
    ``transformer`` (``transformer_style``); its SmoothQuant only from ``SMOOTH_QUANT_MIN_IMAGES`` calibration images.
    Everything else is NNCF's default.
    """
    try:
        import nncf
    except ImportError as exc:
        message = f"--runtime openvino --dtype int8 needs nncf (pip install nncf): {exc}"
        raise RuntimeUnavailableError(message) from None
    import openvino as ov
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        OverflowFix,
    )

    overflow_fix = not cpu_has_vnni()
    smooth_quant = transformer and len(calibration.paths) >= SMOOTH_QUANT_MIN_IMAGES

    def build(folder: Path) -> None:
        model = ov.Core().read_model(str(source.path))
        dataset = nncf.Dataset(calibration.arrays())
        advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE if overflow_fix
                                                  else OverflowFix.FIRST_LAYER)
        if not smooth_quant:  # alpha -1 turns NNCF's SmoothQuant off for that layer type
            advanced.smooth_quant_alphas = AdvancedSmoothQuantParameters(convolution=-1, matmul=-1)
        with contextlib.redirect_stdout(io.StringIO()) as drawn:  # NNCF draws rich progress bars on stdout
            quantized = nncf.quantize(model, dataset, subset_size=len(calibration.paths),
                                      preset=nncf.QuantizationPreset.PERFORMANCE, advanced_parameters=advanced,
                                      model_type=nncf.ModelType.TRANSFORMER if transformer else None)
        _logger.debug("nncf.quantize printed: %s", drawn.getvalue().strip())
        folder.mkdir()
        ov.save_model(quantized, str(folder / "model.xml"), compress_to_fp16=False)

    fields = {"fp32_model_key": source.key, "calibration_sha256": calibration.sha256, "preset": "PERFORMANCE",
              "model_type": "TRANSFORMER" if transformer else "default", "smooth_quant": smooth_quant,
              "overflow_fix": "ENABLE" if overflow_fix else "FIRST_LAYER",
              **library_versions("nncf", "openvino")}
    result = _cached("int8-openvino", fields, "", "nncf.quantize", cache_dir, build, source)
    return replace(result, path=result.path / "model.xml")


INT8_LAYER_TYPES = ("Convolution", "FullyConnected", "MatMul", "GroupConvolution", "Deconvolution")


def openvino_int8_layers(compiled: Any) -> dict[str, int]:
    """Read back from the compiled model how many compute layers run in int8 (u8/i8) and how many in float:
    the proof that OpenVINO executes the quantised graph in int8, not that the file merely holds FakeQuantize."""
    counts = {"int8": 0, "float": 0}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) in INT8_LAYER_TYPES:
            counts["int8" if info["runtimePrecision"].astype(str) in ("u8", "i8") else "float"] += 1
    return counts


# ONNX Runtime's CPU kernels after its graph optimisations: int8 compute (a fused QDQ group) and float compute
_ORT_INT8_OPS = frozenset({"QLinearConv", "QLinearMatMul", "QGemm", "MatMulInteger", "ConvInteger",
                           "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QAttention"})
_ORT_FLOAT_OPS = frozenset({"Conv", "FusedConv", "MatMul", "FusedMatMul", "Gemm", "FusedGemm"})


def onnxruntime_int8_layers(optimized: Any) -> dict[str, int]:
    """Read back from ONNX Runtime's optimised graph (``SessionOptions.optimized_model_filepath``) how many compute
    layers run in int8 and how many in float: a QDQ convolution its fusion did not take stays a float convolution
    behind DequantizeLinear nodes, slower than the fp32 graph (docs/int8.md)."""
    counts = {"int8": 0, "float": 0}
    for node in optimized.graph.node:
        if node.op_type in _ORT_INT8_OPS:
            counts["int8"] += 1
        elif node.op_type in _ORT_FLOAT_OPS:
            counts["float"] += 1
    return counts


class UnderAutocast(torch.nn.Module):
    """``module`` under ``torch.autocast``: one module ``torch.export`` captures whole, autocast in its graph."""

    def __init__(self, module: torch.nn.Module, device_type: str, dtype: torch.dtype):
        super().__init__()
        self.module, self.device_type, self.dtype = module, device_type, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.module(x)


def export_pt2e_int8(module: torch.nn.Module, example: torch.Tensor, calibration: Calibration,
                     memory_format: torch.memory_format = torch.contiguous_format,
                     float_remainder: torch.dtype = torch.float32) -> QuantisedProgram:
    """The PT2E flow with the X86 Inductor quantizer (torchao), calibrated at the example's shape; returns the
    quantised program, exported again for AOTInductor (whose freezing folds and packs the int8 weights), and what
    calibration found of its activation ranges (``scales_at_floor``).

    ``float_remainder``: the dtype of what stays float between the int8 convolutions and linears (norms,
    activations); bf16 runs the program under CPU autocast (Intel's "int8-mixed-bf16")."""
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq  # registers Inductor passes
    except ImportError as exc:
        raise RuntimeUnavailableError("--runtime compile --dtype int8: the PT2E quantisation flow left torch (2.14 "
                                      "has no torch.ao.quantization.quantize_pt2e) and lives in torchao: pip install "
                                      f"torchao ({exc})") from None
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    with torch.no_grad():
        captured = torch.export.export(module, (example,)).module()
        try:
            prepared = prepare_pt2e(captured, quantizer)
        except Exception as exc:  # the quantizer's own pattern code, on a graph it was not written for
            raise RuntimeUnavailableError(quantizer_failure(type(module).__name__, exc)) from None
        size = example.shape[0]
        for start in range(0, len(calibration.images), size):  # batches of the compiled shape, images cycled
            chunk = calibration.images[start:start + size]
            prepared(chunk.repeat(-(-size // len(chunk)), 1, 1, 1)[:size].to(example.dtype).contiguous(
                memory_format=memory_format))
        at_floor = scales_at_floor(prepared)
        warn_of_scales_at_floor(at_floor)
        converted = convert_pt2e(prepared)
        if float_remainder != torch.float32:
            converted = UnderAutocast(converted, "cpu", float_remainder)
        return QuantisedProgram(torch.export.export(converted, (example,)), at_floor)


def quantizer_failure(model_name: str, exc: BaseException) -> str:
    """Why the X86 Inductor quantizer could not annotate a model, naming where in torchao it stopped: its bare
    ``assert`` on a convolution added to a constant (timm's FastViT) said only "AssertionError: "."""
    frames = traceback.extract_tb(exc.__traceback__)
    inside = next((f for f in reversed(frames) if "torchao" in f.filename), frames[-1] if frames else None)
    where = f" in {Path(inside.filename).name}:{inside.lineno} {inside.name}()" if inside else ""
    return (f"--runtime compile --dtype int8: torchao's X86InductorQuantizer cannot annotate {model_name}: "
            f"{type(exc).__name__}{': ' + one_line(str(exc)) if str(exc) else ''}{where} (a pattern of this model it "
            "does not handle; a torchao limit, not the port's); quantise it with --runtime openvino or --runtime "
            "onnxruntime instead")


class QuantisedProgram(NamedTuple):
    program: torch.export.ExportedProgram
    scales_at_floor: dict[str, Any] | None  # see ``scales_at_floor``


def scales_at_floor(prepared: torch.nn.Module) -> dict[str, Any] | None:
    """The per-tensor activation observers that calibrated a scale at the quantizer's floor (``eps``: 2^-12 for
    the X86 Inductor quantizer), as ``{"clamped": n, "quantisers": total, "floor": eps}``; None if none did.
    Values under half that floor round to zero, so the int8 error can be large for a reason the user would not
    guess (random init shrinks efficientnet_b0's activations layer by layer to ~1e-5)."""
    floors = []
    for observer in prepared.modules():
        eps, min_val = getattr(observer, "eps", None), getattr(observer, "min_val", None)
        if not (hasattr(observer, "calculate_qparams") and isinstance(eps, torch.Tensor)
                and isinstance(min_val, torch.Tensor) and min_val.numel() == 1):
            continue  # per-channel weight observers and anything else
        scale, _ = observer.calculate_qparams()  # type: ignore[operator]  # an observer module's method
        floors.append(float(eps) if float(scale.max()) <= float(eps) * (1 + 1e-6) else None)
    clamped = [floor for floor in floors if floor is not None]
    return {"clamped": len(clamped), "quantisers": len(floors), "floor": max(clamped)} if clamped else None


def warn_of_scales_at_floor(at_floor: dict[str, Any] | None) -> None:
    """The warning for ``scales_at_floor``'s finding (said again when the package comes from the cache)."""
    if at_floor:
        _logger.warning("int8 (PT2E): %d of %d activation quantisers calibrated a range too small for the "
                        "quantizer's smallest scale (%.3g): their scale is clamped, so values under %.2g round to zero "
                        "and the int8 error can be large (random-init weights often shrink activations this far; a "
                        "trained checkpoint rarely does)", at_floor["clamped"], at_floor["quantisers"],
                        at_floor["floor"], at_floor["floor"] / 2)


PT2E_QUANTIZER = "torchao.quantization.pt2e X86InductorQuantizer"


def pt2e_cache_fields(calibration: Calibration) -> dict[str, Any]:
    return {"quantizer": PT2E_QUANTIZER, "calibration_sha256": calibration.sha256,
            **library_versions("torchao")}
