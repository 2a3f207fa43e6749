"""Can a user believe a timing? A pure decision over the timing's statistics and the machine's load.

A figure is marked ``reliable: false`` when there is evidence that something other than the model decided it:
- ``other_processes``: other processes kept busy more cores than the timing threads left free;
- ``cpu_steal``: the hypervisor took CPU time from this virtual machine;
- ``dispersion``: the iterations disagree (std above half the median, or p90 far above p50, or p99 far above it);
- ``impossible_order``: the batch with its copies ran faster than the same batch without them;
- ``round_spread``: the same point's median moved between timing rounds (``bench --rounds``).
Thresholds live in ``Thresholds`` (documented in README "Latency"); the decision reads only its arguments, so it
is tested on recorded samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ADVICE = ("rerun on an idle machine (stop the processes named above, or wait for them); with `accelport bench`, "
          "`--rounds 3` or more spreads bursts of load over every configuration and `--iters` more samples per point")
MIN_SAMPLES_FOR_DISPERSION = 5  # with 3 samples, one slow iteration is no evidence of interference


@dataclass(frozen=True)
class Thresholds:
    foreign_margin_cores: float = 0.25  # other processes may use the cores the timing does not, plus this
    max_steal_share: float = 0.05
    max_cv: float = 1.0  # std / p50; one 12 ms hiccup in 30 samples of 3.5 ms already gives 0.5
    max_p90_over_p50: float = 1.5
    max_p99_over_p50: float = 4.0  # p99 of <= 100 samples is nearly the max: one hiccup must not flag
    copies_slack: float = 0.9  # with-copies p50 below this x compute p50 is impossible
    max_round_spread: float = 1.5  # slowest / fastest round median


DEFAULT_THRESHOLDS = Thresholds()


def _reason(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def load_reasons(windows: Sequence[Mapping[str, Any] | None], threads: int,
                 thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[dict[str, str]]:
    """Reasons found in the load windows (``LoadWindow.to_json()``) of one timing; the worst window speaks."""
    measured = [w for w in windows if w]
    reasons: list[dict[str, str]] = []
    if not measured:
        return reasons
    worst = max(measured, key=lambda w: w["foreign_busy_cores"])
    spare = max(0.0, worst["cpu_count"] - threads)
    if worst["foreign_busy_cores"] > spare + thresholds.foreign_margin_cores:
        names = ", ".join(f"{p['name']} (pid {p['pid']}) {p['cores']:.2f}" for p in worst["busiest_others"])
        reasons.append(_reason("other_processes", (
            f"other processes kept {worst['foreign_busy_cores']:.2f} of {worst['cpu_count']} cores busy while "
            f"{threads} timing thread(s) ran" + (f"; busiest: {names}" if names else "")
            + f"; load average {worst['loadavg_before'][0]:.2f} before, {worst['loadavg_after'][0]:.2f} after")))
    steal = max(w["steal_share"] for w in measured)
    if steal > thresholds.max_steal_share:
        reasons.append(_reason("cpu_steal", f"the hypervisor stole {100 * steal:.1f} % of the CPU time"))
    return reasons


def dispersion_reasons(name: str, stats: Mapping[str, Any],
                       thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[dict[str, str]]:
    """Reasons in one set of latency statistics (``LatencyStats.to_json()``)."""
    p50 = stats["p50_ms"]
    if stats["iters"] < MIN_SAMPLES_FOR_DISPERSION or p50 <= 0:
        return []
    found = []
    if stats["std_ms"] > thresholds.max_cv * p50:
        found.append(f"std {stats['std_ms']:.3g} ms is {stats['std_ms'] / p50:.2f}x the median {p50:.3g} ms")
    if stats["p90_ms"] > thresholds.max_p90_over_p50 * p50:
        found.append(f"p90 {stats['p90_ms']:.3g} ms is {stats['p90_ms'] / p50:.2f}x the median")
    if stats["p99_ms"] > thresholds.max_p99_over_p50 * p50:
        found.append(f"p99 {stats['p99_ms']:.3g} ms is {stats['p99_ms'] / p50:.2f}x the median")
    return [_reason("dispersion", f"{name}: {', '.join(found)}")] if found else []


def assess(timings: Mapping[str, Mapping[str, Any]], windows: Sequence[Mapping[str, Any] | None], threads: int,
           round_p50_ms: Sequence[float] = (), thresholds: Thresholds = DEFAULT_THRESHOLDS) -> dict[str, Any]:
    """``{"reliable", "reasons": [{"code", "message"}], "advice"}`` for the timings (mode -> stats) of one point."""
    reasons = load_reasons(windows, threads, thresholds)
    for name, stats in timings.items():
        reasons += dispersion_reasons(name, stats, thresholds)
    compute, copies = timings.get("compute"), timings.get("with_copies")
    if compute and copies and copies["p50_ms"] < thresholds.copies_slack * compute["p50_ms"]:
        reasons.append(_reason("impossible_order", (
            f"with copies (p50 {copies['p50_ms']:.3g} ms) ran faster than compute alone (p50 "
            f"{compute['p50_ms']:.3g} ms) although it does more work")))
    if len(round_p50_ms) > 1 and max(round_p50_ms) > thresholds.max_round_spread * min(round_p50_ms):
        reasons.append(_reason("round_spread", (
            f"the median moved from {min(round_p50_ms):.3g} to {max(round_p50_ms):.3g} ms between rounds")))
    return {"reliable": not reasons, "reasons": reasons, "advice": ADVICE if reasons else None}


def summarise(verdicts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One verdict for many points (a bench sweep): unreliable when any point is, with each distinct reason code."""
    unreliable = [v for v in verdicts if not v["reliable"]]
    codes = sorted({r["code"] for v in unreliable for r in v["reasons"]})
    return {"reliable": not unreliable, "unreliable_points": len(unreliable), "points": len(verdicts),
            "reason_codes": codes, "advice": ADVICE if unreliable else None}
