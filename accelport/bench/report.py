"""bench.md and the ``--pick`` text, rendered from the typed bench document (never from a second copy)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import json_writer, text_writer
from ..environment import allocator_text, cpu_kind_text
from ..formatting import one_line, or_missing
from ..parity import zero_target_cause
from ..plotting import write_report_set
from ..proofs import differing_text, reads_as_own_error, rounding_text
from .points import MIN_ITERS
from .rows import rounds_disagree

if TYPE_CHECKING:
    from .document import BenchDocument
    from .rows import BatchPick, BenchRow, PeerComparison


def _num(value: Any, fmt: str = ".3f") -> str:
    return "–" if value is None else format(value, fmt)


def _ratio(value: float | None) -> str:
    """A latency ratio: two decimals, or two significant digits below 0.1 (0.0036 read as "0.00")."""
    return _num(value, ".2f" if value is None or value >= 0.1 else ".2g")


def isa_text(env: dict[str, Any]) -> str:
    """``AVX2 (torch kernels: AVX2; no bf16 arithmetic, no int8 dot product)`` from the environment record."""
    isa = env.get("cpu_isa")
    if not isa:
        return str(env.get("cpu_capability"))
    lacks = [what for key, what in (("bf16_arithmetic", "bf16 arithmetic"), ("int8_dot", "int8 dot product (VNNI)"))
             if isa.get(key) is False]
    return (f"{isa['name']} (torch kernels: {isa.get('torch_cpu_capability')}"
            + (f"; no {', no '.join(lacks)}" if lacks else "") + ")")


def hardware_line(document: BenchDocument) -> str:
    env = document.environment
    return (f"device `{document.device}` ({env['device_name']}); host CPU {cpu_kind_text(env)}, "
            f"{env['cpu_count']} logical cores, ISA {isa_text(env)}; {env['threads']} intra-op threads for every "
            "runtime"
            + (f" (also swept for accelport's single-stream rows: {', '.join(map(str, swept))}, labelled)"
               if (swept := document.settings.swept_threads) and isinstance(swept, list) else "")
            + f"; allocator: {allocator_text(env)}")


def software_line(env: dict[str, Any]) -> str:
    engines = ", ".join(f"{name} {or_missing(env.get(name), 'not installed')}" for name in ("onnxruntime", "openvino",
                                                                                          "onnx"))
    return f"python {env['python']}, torch {env['torch']}, timm {env['timm']}, {engines}"


def _timing(row: BenchRow) -> str:
    if row.timing_reliable:
        return "ok"
    reasons = (row.reliability or {})["reasons"]
    return "**unreliable** (" + ", ".join(dict.fromkeys(r["code"] for r in reasons)) + ")"


def reliability_lines(summary: dict[str, Any] | None, rows: Sequence[BenchRow]) -> list[str]:
    """Whether the sweep's timings can be believed, which points cannot, why, and what to do."""
    if not summary:
        return []
    if summary["reliable"]:
        return [f"Timing reliable: yes, no interference detected at any of the {summary['points']} measured points."]
    lines = [f"> **Timings unreliable (`reliable: false`)** at {summary['unreliable_points']} of {summary['points']} "
             f"points ({', '.join(summary['reason_codes'])}): {', '.join(summary['unreliable'])}."]
    if summary["unreliable_baselines"]:
        lines.append("> The eager fp32 baseline itself is unreliable at batch "
                     f"{', '.join(map(str, summary['unreliable_baselines']))}, so every × eager ratio there is too.")
    for row in rows:
        for reason in (row.reliability or {}).get("reasons", []):
            lines.append(f"> - {row.label} batch {row.batch_size}: {reason['message']}")
    lines.append(f"> - what to do: {summary['advice']}")
    return lines


def _proof_note(parity: dict[str, Any]) -> str:
    """What the structural proof said of a point that has one (int8; half precision with --target-weights): a
    failed int8 row with a passing proof is int8's own error, not the port's (bench.md could not tell them apart)."""
    status = (parity.get("structural_proof") or {}).get("status")
    if status is None or "structural_proof" in parity["failed_checks"]:
        return ""
    if not parity["passed"] and reads_as_own_error(status, parity["failed_checks"]):
        return "; structural proof passed: the precision's own error, not the port's"
    return f"; structural proof {status}"


def _zero_target_note(parity: dict[str, Any], random_init: bool) -> str:
    """run's caution in a row: the target returned all zeros where the reference did not (the metrics read only
    cosine 0, rel L2 1); int8 names the usual cause."""
    zeros = parity.get("zero_target_count") or 0
    if not zeros:
        return ""
    cause = zero_target_cause(str(parity.get("precision")), random_init)
    return f"; **outputs all zero** for {zeros} of {parity.get('images')} image(s) where the reference's are not{cause}"


def table_lines(rows: Sequence[BenchRow], random_init: bool = False) -> list[str]:
    lines = ["| configuration | batch | p50 ms | p90 ms | p99 ms | images/s | × eager p50 | setup s | peak RSS MB "
             "| parity | timing |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: (r.batch_size, r.p50_ms if r.measured else float("inf"))):
        if not row.measured:
            reason = one_line(row.reason or "")
            lines.append(f"| {row.label} | {row.batch_size} | {row.status}: {reason} | | | | | | | | |")
            continue
        lat, parity = row.latency, row.parity
        verdict = (f"pass ({parity['precision']}, cos {parity['worst_sample_cosine']:.6f})" if row.passed
                   else f"**FAIL** ({parity['precision']}: {', '.join(parity['failed_checks'])})") + _proof_note(parity)
        verdict += _zero_target_note(parity, random_init)
        if row.extra.get("snippets_disabled"):
            verdict += "; OpenVINO's subgraph JIT off: a trial process crashed with it on (slower than the JIT)"
        lines.append(f"| {row.label} | {row.batch_size} | {lat['p50_ms']:.2f} | {lat['p90_ms']:.2f} | "
                     f"{lat['p99_ms']:.2f} | {row.images_per_s:.1f} | {_ratio(row.ratio_vs_eager)} | "
                     f"{row.setup_s:.1f} | {_num(row.memory.get('peak_mb'), '.0f')} | {verdict} | {_timing(row)} |")
    return lines


def pick_lines(picks: Sequence[BatchPick]) -> list[str]:
    lines = []
    for pick in picks:
        if pick.fastest is None:
            lines.append(f"- batch {pick.batch_size}: **no configuration passed parity**")
            continue
        per_dtype = ", ".join(f"{d}: {label or 'none passes'}" for d, label in pick.fastest_by_dtype.items())
        lines.append(f"- batch {pick.batch_size}: **{pick.fastest}**, {pick.fastest_p50_ms:.2f} ms p50 "
                     f"({_ratio(pick.fastest_ratio_vs_eager)}× the eager fp32 latency); fastest per dtype: "
                     f"{per_dtype}")
    return lines


def peer_lines(comparison: Sequence[PeerComparison] | None, rounds: int) -> list[str]:
    """Per (dtype, batch): the pick, the best hand-written peer, their paired ratio (bench/peers.py); nothing when
    the document has no comparison (written before peer rows), a line saying so when it is empty (``--no-peers``)."""
    if comparison is None:
        return []
    if not comparison:
        return ["No peer rows (`--no-peers`)."]
    lines = [f"Ratio = median over the {rounds} timing round(s) of (pick's round p50 / best peer's round p50), "
             "both passing parity; below 1 the pick is faster; \"rounds disagree\": some rounds put the pick ahead "
             "and others behind, so at this run's noise the two are level. Peers are timed in the same rounds, never "
             "picked.",
             "", "| dtype | batch | pick | p50 ms | best peer | p50 ms | pick / best peer | per-round ratios |",
             "|---|---|---|---|---|---|---|---|"]
    for c in comparison:
        notes = [note for note, holds in (("peer faster", c.at_least_as_fast is False),
                                          ("rounds disagree", rounds_disagree(c.round_ratios))) if holds]
        verdict = "–" if c.ratio_to_best_peer is None else (
            f"**{c.ratio_to_best_peer:.3f}**" + (f" ({'; '.join(notes)})" if notes else ""))
        lines.append(f"| {c.dtype} | {c.batch_size} | {c.pick or 'none passes'} | {_num(c.pick_p50_ms, '.2f')} | "
                     f"{c.best_peer or 'none passes'} | {_num(c.best_peer_p50_ms, '.2f')} | {verdict} | "
                     + ", ".join(f"{r:.3f}" for r in c.round_ratios) + " |")
    return lines


def input_blind_lines(rows: tuple[BenchRow, ...]) -> list[str]:
    """run's caution, once for the sweep: the reference barely depends on the images, so every row's parity is
    blind to a target that ignores its input."""
    blind = sorted({row.dtype for row in rows if row.measured and row.parity.get("input_blind")})
    if not blind:
        return []
    return [f"caution ({', '.join(blind)} criteria): the reference outputs of these images are so alike that one "
            "of them, returned for every image, would be within max_rel_l2: the model as loaded barely depends on "
            "its input (common with random-init weights), or the images are near-copies, so parity here cannot see "
            "a target that ignores its input; use real weights or more varied images"]


def _target_weights_lines(target: dict[str, Any] | None) -> list[str]:
    """The port under test (--target-weights): every row runs it; what its structural proof compared with."""
    if not target:
        return []
    rounded = (target.get("proof_reference_rounded") or {}).get("tensors_rounded")
    return [f"- target weights (--target-weights) `{target['path']}` (sha256 `{(target['sha256'] or '')[:12]}`, "
            f"stored as {', '.join(target.get('stored_dtypes') or ['?'])}): every row runs them, judged against the "
            "reference's weights"
            + (f"; the structural proof compares with the reference rounded as this file stores it "
               f"({rounding_text(rounded)})" if rounded else "")
            + _differing_text(target)]


def _differing_text(target: dict[str, Any]) -> str:
    """Which tensors the port changes (as report.md says it); "" for documents from before it was recorded."""
    if "differing_tensors" not in target:
        return ""
    return "; " + differing_text(target["differing_tensors"], bool(target.get("compared_with_rounded_reference")),
                                 target.get("underflowed_tensors") or ())


def render_markdown(document: BenchDocument) -> str:
    s, model = document.settings, document.model
    weights_note = "" if model["pretrained_used"] else " (**random init**: no pretrained weights found)"
    lines = [
        f"# accelport bench: {model['name']}",
        "",
        f"- {hardware_line(document)}",
        f"- {software_line(document.environment)}",
        f"- model `{model['name']}` ({model['head']}, input {model['input_size']}), weights "
        f"`{model['weights_source']}`{weights_note}",
        *_target_weights_lines(model.get("target_weights")),
        f"- latency: compute only (input already on the device, device synchronised each iteration), "
        f"{s.warmup} warm-up + up to {max(s.iters, MIN_ITERS)} timed iterations (at most ~{s.max_time_s:g} s each "
        f"point, at least {MIN_ITERS} in all, {-(-MIN_ITERS // max(1, document.rounds))} per round"
        + (f"; --iters {s.iters} raised to that" if s.iters < MIN_ITERS else "") + f") in {document.rounds} "
        "round(s) over all points; setup (export/compile/first run "
        "of the batch size) is timed apart",
        f"- parity: {s.num_images} real images (cycled to fill a batch) against CPU eager fp32, criteria of each "
        "precision; × eager = p50 / the same run's eager fp32 p50 at the same batch size (lower is faster)",
        "- peak RSS: the whole process's peak during that point (reset before each one), so it includes Python, "
        "torch and the reference",
        *(f"- **{line}**" for line in input_blind_lines(document.rows)),
        "",
        "## Timing reliability",
        "",
        *reliability_lines(document.timing_reliability, document.rows),
        "",
        "## Pick: fastest configuration passing parity",
        "",
        *pick_lines(document.pick or ()),
        "",
        "## accelport vs what you would write by hand",
        "",
        *peer_lines(document.peer_comparison, document.rounds),
        "",
        "## All configurations",
        "",
        *table_lines(document.rows, random_init=not model["pretrained_used"]),
        "",
    ]
    return "\n".join(lines)


def render_pick(document: BenchDocument) -> str:
    """What ``bench --pick`` prints: per batch size, the choice and the table that justifies it."""
    lines = []
    for pick in document.pick or ():
        lines.append(f"batch {pick.batch_size}: " + (f"{pick.fastest} ({pick.fastest_p50_ms:.2f} ms p50, "
                                                     f"{_ratio(pick.fastest_ratio_vs_eager)}x eager)"
                                                     if pick.fastest else "no configuration passed parity"))
        for entry in pick.table:
            if entry.status == "ok":
                lines.append(f"  {entry.label:<28} {entry.p50_ms:10.2f} ms  {entry.images_per_s:9.1f} img/s  "
                             f"{_ratio(entry.ratio_vs_eager):>5}x  parity {entry.parity}"
                             + ("" if entry.timing_reliable is not False else "  timing UNRELIABLE"))
            else:
                lines.append(f"  {entry.label:<28} {entry.status}: {one_line(entry.reason or '')}")
    comparison = [c for c in document.peer_comparison or () if c.ratio_to_best_peer is not None]
    if comparison:
        lines.append("against what you would write by hand (paired ratio pick / best peer, < 1: the pick is faster):")
    for c in comparison:
        lines.append(f"  {c.dtype} batch {c.batch_size}: {c.pick} / {c.best_peer} = {c.ratio_to_best_peer:.3f}"
                     + (" (the rounds disagree: level)" if rounds_disagree(c.round_ratios) else ""))
    return "\n".join(lines)


def write_bench_artifacts(out_dir: Path, document: BenchDocument, plot: bool = True) -> dict[str, Path]:
    """bench.json, bench.md and (``plot``, matplotlib permitting) bench.png as one atomic set: a full disk left a
    new bench.json beside an earlier sweep's picture."""
    from .plot import write_plot

    return write_report_set(out_dir, {"json": ("bench.json", json_writer(document.to_json())),
                                      "markdown": ("bench.md", text_writer(document.to_markdown()))},
                            ("bench.png", (lambda path: write_plot(document, path)) if plot else None))
