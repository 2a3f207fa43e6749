"""Human-readable artifacts, all rendered from the typed summary (``RunSummary``, never a second copy of the data),
and the atomic write of the set."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import json_writer, npy_writer, text_writer
from ..criteria import BASELINE_RTOL, Check
from ..environment import allocator_text, cpu_kind_text
from ..formatting import (
    NO_WEIGHTS_FILE,
    comparison_text,
    format_comparison,
    listed,
    markdown_cell,
    or_missing,
    printable,
    short_paths,
    skipped_lines,
)
from ..parity import baseline_ratios, zero_target_caution
from ..plotting import write_report_set
from ..proofs import differing_text, own_error_reading, reads_as_own_error
from ..runners.quantize import quantisation_text

if TYPE_CHECKING:
    from ..latency import LatencyReport
    from ..layers.document import LayersDocument
    from .summary import RunSample, RunSummary

_logger = logging.getLogger(__name__)

_METRIC_ROWS = (
    ("max_abs_diff", "max abs diff"),
    ("mean_abs_diff", "mean abs diff"),
    ("max_rel_err", "max guarded relative error"),
    ("rel_l2_err", "relative L2 error"),
    ("rmse", "RMSE"),
    ("cosine_similarity", "cosine similarity"),
    ("share_within_1e_3", "share within 0.1 % (rel)"),
    ("share_within_5e_3", "share within 0.5 % (rel)"),
    ("share_within_1e_2", "share within 1 % (rel)"),
    ("nonfinite_target", "NaN/Inf in target"),
)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _check_row(check: Check) -> str:
    value, threshold = format_comparison(check.value, check.op, check.threshold)
    return f"| {check.name} | {value} | {check.op} {threshold} | {'pass' if check.passed else '**FAIL**'} |"


def _verdict_lines(summary: RunSummary) -> list[str]:
    return [f"{'PASS' if c.passed else 'FAIL'}  {c.name}: {comparison_text(c.value, c.op, c.threshold)}"
            + ("" if c.passed or not c.detail else f" ({c.detail})")
            for c in summary.parity.checks]


def latency_lines(latency: LatencyReport) -> list[str]:
    """The latency line, and when the timing cannot be believed, why and what to do."""
    compute = latency.compute
    lines = [f"latency (batch {compute.batch_size}): mean {compute.mean_ms:.3f} ms, "
             f"p50 {compute.p50_ms:.3f} ms, p99 {compute.p99_ms:.3f} ms, {compute.images_per_s:.1f} images/s"]
    reliability = latency.reliability or {}
    if reliability.get("reliable") is False:
        lines.append("timing UNRELIABLE (reliable: false):")
        lines += [f"  - {reason['message']}" for reason in reliability["reasons"]]
        lines.append(f"  what to do: {reliability['advice']}")
    return lines


def _load_line(latency: LatencyReport) -> str:
    windows = [w for w in (latency.load or {}).values() if w]
    if not windows:
        return "Machine load: not measured (no /proc on this system)."
    worst = max(windows, key=lambda w: w["foreign_busy_cores"])
    return (f"Machine load while timing: other processes up to {worst['foreign_busy_cores']:.2f} of "
            f"{worst['cpu_count']} cores busy, CPU steal {100 * max(w['steal_share'] for w in windows):.1f} %, "
            f"load average {worst['loadavg_before'][0]:.2f} before and {worst['loadavg_after'][0]:.2f} after.")


def _zero_target_lines(summary: RunSummary) -> list[str]:
    """Say it when the target returned all zeros where the reference did not: the metrics alone read cosine 0."""
    zeros = summary.parity.zero_target
    caution = zero_target_caution(len(zeros), len(summary.parity.samples), listed(zeros), summary.criteria.precision,
                                  not summary.weights.pretrained_used)
    return [caution] if caution else []


def _input_blind_lines(summary: RunSummary) -> list[str]:
    """A caution when the reference barely depends on the images: the verdict cannot see a target that ignores them."""
    parity = summary.parity
    if summary.input_blind is None:
        return [f"note: whether a target that ignores its input would pass is not judged here: that needs two or more "
                f"images with finite reference outputs ({len(parity.samples)} given)"]
    if not summary.input_blind:
        return []
    random_init = " (common with RANDOM-INIT weights)" if summary.weights.source == "random-init" else ""
    return [f"caution: the reference outputs of these {len(parity.samples)} images are so alike that one of them, "
            f"returned for every image, would be within max_rel_l2 (worst rel L2 {_fmt(parity.constant_output_rel_l2)}"
            f" < {_fmt(parity.criteria.max_rel_l2)}): the model as loaded barely depends on its input{random_init}, or "
            "the images are near-copies, so this verdict cannot see a target that ignores its input; use real "
            "weights or more varied images"]


def _differing_text(summary: RunSummary) -> str:
    """Which tensors --target-weights changes (``WeightDifferences.text``)."""
    differences = summary.weight_differences
    return differences.text() if differences else differing_text((), False)


def _weights_caution_lines(summary: RunSummary) -> list[str]:
    return [f"caution: {caution}"] if (caution := summary.weights_caution) else []


def _proof_lines(summary: RunSummary) -> list[str]:
    """The structural proof (target in strict fp32) and the same-precision baseline, for the log and report.md."""
    lines = []
    proof = summary.structural_proof
    if proof is not None:
        lines.append(f"structural proof (same target, strict fp32, fp32 criteria): {proof.status.upper()}: "
                     f"{proof.reason}")
        for c in proof.parity.checks if proof.parity else []:
            if not c.passed:
                lines.append(f"  FAIL  {c.name}: {_fmt(c.value)} {c.op} {_fmt(c.threshold)}"
                             + (f" ({c.detail})" if c.detail else ""))
        if reads_as_own_error(proof.status, [c.name for c in summary.parity.checks if not c.passed]):
            lines.append(_own_error_reading(summary))
    parity = summary.parity
    if parity.baseline is not None:
        judged = [s for s in parity.samples if s.baseline_rel_l2 is not None]
        l2_ratio, outside_ratio = baseline_ratios(judged)
        lines.append(f"same-precision baseline ({parity.baseline_description}), mean over {len(judged)} image(s): "
                     f"rel L2 target {_fmt(_mean([s.metrics.rel_l2_err for s in judged]))} vs baseline "
                     f"{_fmt(_mean([s.baseline_rel_l2 for s in judged]))}, ratio {_fmt(l2_ratio)}; elements outside "
                     f"{BASELINE_RTOL:g}: target {_fmt(_mean([s.outside_share for s in judged]))} vs baseline "
                     f"{_fmt(_mean([s.baseline_outside_share for s in judged]))}, ratio {_fmt(outside_ratio)}")
    return lines


def _mean(values: list[Any]) -> float:
    return float(np.mean(values))


def _own_error_reading(summary: RunSummary) -> str:
    target = summary.header.target or {}
    rounded = summary.structural_proof.rounded if summary.structural_proof else None
    return own_error_reading(summary.criteria.precision, target.get("calibration_images"),
                             summary.weights.source == "random-init", target.get("int8_scales_at_floor"),
                             sorted(rounded.rounded) if rounded else None)


def _agreement_word(match: bool | None, near_tie: bool | None, mismatch: str) -> str:
    return "match" if match else ("near-tie" if near_tie else mismatch)


def _auto_pick_text(target: dict[str, Any]) -> str | None:
    """How ``--runtime auto`` chose this target, and how it compared with the bench's best hand-written peer (the
    report is what is handed on: it must say the runtime was picked, and from which measurements)."""
    auto = target.get("auto")
    if not auto:
        return None
    # what the user gave replaced the pick's value (AutoChoice.applied_to): the timing quoted is not of what ran
    flags = {"threads": "--threads", "streams": "--streams", "micro_batch": "--micro-batch"}
    if target.get("runtime") == "openvino" and target.get("dtype") == "int8":
        flags["int8_remainder"] = "--int8-remainder"
    replaced = [f"{flag} {target.get(name)} replaced the pick's {auto.get(name)}" for name, flag in flags.items()
                if auto.get(name) is not None and target.get(name) is not None and target.get(name) != auto.get(name)]
    return (f"picked by --runtime auto from {auto.get('source')}: {auto.get('reason')}"
            + (f"; given: {', '.join(replaced)} (the figure quoted is the pick's, not what ran)" if replaced else ""))


def render_log(summary: RunSummary) -> str:
    """accuracy_compare.log: the comparison as a porting engineer reads it in a terminal."""
    header, weights, overall = summary.header, summary.weights, summary.parity.overall
    target, model = header.target or {}, header.model
    lines = [
        f"accelport accuracy comparison ({header.created_utc})",
        f"model      {model['name']} ({model['head']}, output {summary.output_shape})",
        f"weights    {weights.source}: {weights.path or 'RANDOM INIT (no pretrained weights found)'}"
        + (f" (sha256 {weights.sha256[:12]})" if weights.sha256 else "")
        + (f" [{weights.state_key}]" if weights.state_key else ""),
        *([f"target weights (--target-weights): {summary.target_weights.path} (sha256 "
           f"{(summary.target_weights.sha256 or '')[:12]})"
           + (f" [{summary.target_weights.state_key}]" if summary.target_weights.state_key else "")
           + f"; {_differing_text(summary)}"]
          if summary.target_weights else []),
        "reference  cpu eager fp32",
        f"target     {target['device']} ({header.environment['device_name']}) {target['runtime']} "
        f"{target['dtype']}, fp32 math {target['fp32_math']}, criteria {summary.criteria.label()}",
        *([f"           {line}"] if (line := quantisation_text(target)) else []),
        *([f"           {line}"] if (line := _auto_pick_text(target)) else []),
        "",
        "overall metrics:",
        *(f"  {label:<28} {_fmt(getattr(overall, key))}" for key, label in _METRIC_ROWS),
        "",
        "per image:",
    ]
    for sample in summary.samples:
        m, s = sample.parity.metrics, sample.parity
        line = f"  {printable(sample.path)}: cos {m.cosine_similarity:.7f}  rel_l2 {m.rel_l2_err:.3e}  " \
               f"max_abs {m.max_abs_diff:.3e}"
        if sample.reference_labels is not None:
            top1 = _agreement_word(s.top1_match, s.top1_near_tie, "MISMATCH")
            top5 = _agreement_word(s.top5_match, s.top5_near_tie, "MISMATCH")
            line += f"  top1 {top1} ({sample.reference_labels[0]})  top5 {top5}"
        lines.append(line)
    lines += skipped_lines(summary.inputs.skipped, "  ") + _image_note_lines(summary, "  ")
    lines += ["", "verdict checks:", *(f"  {v}" for v in _verdict_lines(summary)), *_zero_target_lines(summary),
              *_input_blind_lines(summary), *_weights_caution_lines(summary), "",
              *_proof_lines(summary), "",
              f"status: {summary.status.upper()}", "", *latency_lines(summary.latency), ""]
    return "\n".join(lines)


def render_report(summary: RunSummary) -> str:
    """report.md: the adaptation report, generated from the same document as summary.json."""
    lines = [*_setup_lines(summary), *_parity_lines(summary), *_sample_lines(summary.samples),
             *_latency_section(summary.latency)]
    layers = summary.layer_report
    if layers:
        named = ", ".join(f"{mode} `{module}`" if module else f"{mode} none"
                          for mode, module in (summary.layers_answer or {}).items())
        lines += ["", "## Layer-by-layer comparison",
                  (f"First divergent module: {named}. " if named else "") + f"See [{layers}]({layers})."]
    elif summary.layers_not_run:
        lines += ["", "## Layer-by-layer comparison",
                  f"Asked for (--layers-on-fail), not run: {summary.layers_not_run}"]
    if summary.power_report:
        lines += ["", "## Detection power", f"What this verdict detects: see [{summary.power_report}]"
                  f"({summary.power_report})."]
    return "\n".join(lines) + "\n"


def _setup_lines(summary: RunSummary) -> list[str]:
    """The verdict, then what ran: model and preprocessing, weights, hardware and software."""
    env, target, weights, model = (summary.header.environment, summary.header.target or {}, summary.weights,
                                   summary.header.model)
    dc = model["data_config"]
    pretrained_note = "" if weights.pretrained_used else (
        "\n> **Warning: no pretrained weights were found; this run used a deterministic random init.** "
        "Parity and latency are still meaningful; class predictions are not.\n")
    return [
        f"# Adaptation report: {model['name']} on {target['device']}",
        "",
        f"**Verdict: {summary.status.upper()}** (criteria `{summary.criteria.label()}`)",
        pretrained_note,
        "## Model",
        f"- timm model `{model['name']}`, head `{model['head']}`"
        + (f", {model['num_classes']} classes" if model["head"] == "classifier" else "")
        + f", {model['num_params']:,} parameters, output shape {summary.output_shape}",
        f"- preprocessing ({dc['size_mode']} size): input {dc['input_size']}, {dc['interpolation']}, "
        f"crop_pct {dc['crop_pct']} ({dc['crop_mode']}), mean {dc['mean']}, std {dc['std']}",
        "",
        "## Weights",
        f"- source: `{weights.source}`; path: {_code_or(weights.path, NO_WEIGHTS_FILE)}",
        f"- sha256: {_code_or(weights.sha256, NO_WEIGHTS_FILE)}; format: "
        f"{or_missing(weights.file_format, NO_WEIGHTS_FILE)}; key layout: "
        f"{or_missing(weights.key_layout, NO_WEIGHTS_FILE)}; stored as: "
        f"{', '.join(weights.stored_dtypes) if weights.stored_dtypes else NO_WEIGHTS_FILE}"
        + (f"; state dict under `{weights.state_key}`" if weights.state_key else ""),
        *([f"- target side only (--target-weights): `{summary.target_weights.path}`, sha256 "
           f"`{summary.target_weights.sha256}`"
           + (f"; state dict under `{summary.target_weights.state_key}`" if summary.target_weights.state_key else "")
           + f"; {_differing_text(summary)}"]
          if summary.target_weights else []),
        "",
        "## Hardware and software",
        f"- target: `{target['device']}` ({env['device_name']}), runtime `{target['runtime']}`, dtype "
        f"`{target['dtype']}`, channels_last {target['channels_last']}, streams {target.get('streams', 1)}, "
        f"micro-batch {target.get('micro_batch') or 'none'}, "
        f"fp32 math `{target['fp32_math']}`",
        *([f"- {line}"] if (line := quantisation_text(target)) else []),
        *([f"- {line}"] if (line := _auto_pick_text(target)) else []),
        f"- numeric settings: {', '.join(f'{k}={v}' for k, v in target['numeric_settings'].items())}",
        f"- host CPU: {cpu_kind_text(env)}; {env['cpu_count']} cores, torch threads {env['torch_threads']}; "
        f"allocator: {allocator_text(env)}",
        f"- python {env['python']}, torch {env['torch']}, torchvision {env['torchvision']}, timm {env['timm']}, "
        f"torch_npu {or_missing(env['torch_npu'], 'not installed')}, numpy {env['numpy']}",
        "",
    ]


def _image_note_lines(summary: RunSummary, bullet: str) -> list[str]:
    """Images compared as decoded that may not be what the user meant: said in the log alone, a PASS on a nearly
    black image read as a PASS on the photo."""
    notes = summary.inputs.notes
    if not notes:
        return []
    return [f"{len(notes)} image(s) compared as decoded, with a note:",
            *(f"{bullet}{printable(path)}: {printable(note)}" for path, note in notes)]


def _parity_lines(summary: RunSummary) -> list[str]:
    overall = summary.parity.overall
    return [
        "## Parity against the CPU fp32 reference",
        f"{summary.inputs.num_images} real image(s).",
        *skipped_lines(summary.inputs.skipped, "- "),
        *_image_note_lines(summary, "- "),
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {label} | {_fmt(getattr(overall, key))} |" for key, label in _METRIC_ROWS),
        "",
        "| check | measured | criterion | result |",
        "|---|---|---|---|",
        *(_check_row(c) for c in summary.parity.checks),
        "",
        *(f"- {line}" for line in [*_zero_target_lines(summary), *_input_blind_lines(summary),
                                   *_weights_caution_lines(summary), *_proof_lines(summary)]),
        "",
    ]


def _sample_lines(samples: tuple[RunSample, ...]) -> list[str]:
    """The per-image table: a classifier's with its labels and top-k agreement, features' with the distances."""
    if not samples:
        return []
    classifier = samples[0].is_classifier
    lines = (["| image | cosine | rel L2 | reference top-1 | target top-1 | top-1 | top-5 |",
              "|---|---|---|---|---|---|---|"] if classifier else
             ["| image | cosine | rel L2 | max abs diff |", "|---|---|---|---|"])
    for sample, label in zip(samples, short_paths([s.path for s in samples]), strict=True):
        s, m = sample.parity, sample.parity.metrics
        line = f"| {markdown_cell(label)} | {m.cosine_similarity:.7f} | {m.rel_l2_err:.2e} |"
        if not classifier:
            lines.append(f"{line} {m.max_abs_diff:.2e} |")
            continue
        lines.append(
            f"{line} {(sample.reference_labels or ('',))[0]} | {(sample.target_labels or ('',))[0]} | "
            f"{_agreement_word(s.top1_match, s.top1_near_tie, '**mismatch**')} | "
            f"{_agreement_word(s.top5_match, s.top5_near_tie, '**mismatch**')} |")
    return [*lines, ""]


def _latency_section(latency: LatencyReport) -> list[str]:
    lines = [
        "## Latency",
        f"Batch {latency.compute.batch_size}, {latency.warmup} warm-up and {latency.compute.iters} "
        "timed iterations, device synchronised after each.",
        "",
        "| mode | mean ms | p50 ms | p90 ms | p99 ms | min ms | std ms | images/s (p50) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode in ("compute", "with_copies"):
        s = getattr(latency, mode)
        lines.append(f"| {mode} | {s.mean_ms:.3f} | {s.p50_ms:.3f} | {s.p90_ms:.3f} | {s.p99_ms:.3f} | "
                     f"{s.min_ms:.3f} | {s.std_ms:.3f} | {s.images_per_s:.1f} |")
    return [*lines, "", _load_line(latency), *_reliability_section(latency.reliability or {})]


def _code_or(value: Any, meaning: str) -> str:
    return meaning if value is None else f"`{value}`"


def _reliability_section(reliability: dict[str, Any]) -> list[str]:
    if reliability.get("reliable") is not False:
        return ["Timing reliable: yes (no interference detected)."]
    return ["", "> **Timing unreliable (`reliable: false`)**: these figures were disturbed and should not be quoted.",
            *(f"> - {reason['message']}" for reason in reliability["reasons"]),
            f"> - what to do: {reliability['advice']}"]


SAVED_OUTPUTS = ("reference_outputs.npy", "target_outputs.npy")  # --save-outputs


def write_artifacts(out_dir: Path, summary: RunSummary, reference: np.ndarray | None = None,
                    target: np.ndarray | None = None, *, layers: LayersDocument | None = None) -> dict[str, Path]:
    """summary.json, accuracy_compare.log, report.md (and the outputs as .npy; and the layer report of ``run
    --layers-on-fail``, keys prefixed ``layers_``), written as one atomic set."""
    files = {
        "summary": ("summary.json", json_writer(summary.to_json())),
        "log": ("accuracy_compare.log", text_writer(summary.to_log())),
        "report": ("report.md", text_writer(summary.to_markdown())),
    }
    if reference is not None and target is not None:
        files["reference_outputs"] = (SAVED_OUTPUTS[0], npy_writer(reference))
        files["target_outputs"] = (SAVED_OUTPUTS[1], npy_writer(target))
    plot = None
    if layers is not None:
        from ..layers.render import layer_report_files

        layer_files, plot = layer_report_files(layers)
        files |= {f"layers_{key}": item for key, item in layer_files.items()}
    written = write_report_set(out_dir, files, plot)
    artifacts = {("layers_plot" if key == "plot" else key): path for key, path in written.items()}
    names = {path.name for path in artifacts.values()}
    for name in SAVED_OUTPUTS:  # an earlier run's outputs beside this run's summary would read as this run's
        if name not in names:
            (out_dir / name).unlink(missing_ok=True)
    return artifacts
