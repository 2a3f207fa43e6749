"""The pick: the fastest configuration that passes parity, per batch size, and the table that justifies it.

Also resolves ``accelport run --runtime auto``: from ``<out-dir>/bench.json`` when it was measured for the
same model, weights, --target-weights, device, torch and machine, else from a short sweep of every runtime at the
run's dtype and batch size. ``--dtype`` stays the user's choice (it decides the criteria); auto picks runtime, layout
and OpenVINO streams and micro-batch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..atomic import write_json_atomic, write_text_atomic
from ..formatting import one_line

if TYPE_CHECKING:
    from ..job.context import JobContext
    from ..job.spec import Target
    from ..models import LoadedModel
    from .document import BenchDocument

_logger = logging.getLogger(__name__)

AUTO_BENCH_NAME = "auto_bench.json"


def _passes(row: dict[str, Any]) -> bool:
    return row["status"] == "ok" and bool(row["parity"]["passed"])


def fastest_passing(rows: list[dict], batch_size: int, dtype: str | None = None) -> dict[str, Any] | None:
    candidates = [r for r in rows if r["batch_size"] == batch_size and _passes(r) and dtype in (None, r["dtype"])
                  and r.get("kind") != "peer"]  # a hand-written peer recipe is measured, never picked
    return min(candidates, key=lambda r: r["latency"]["p50_ms"], default=None)


def justification(rows: list[dict], batch_size: int) -> list[dict[str, Any]]:
    """Every configuration at ``batch_size``: measured ones by p50, then the ones that could not run."""
    at_size = [r for r in rows if r["batch_size"] == batch_size]
    measured = sorted((r for r in at_size if r["status"] == "ok"), key=lambda r: r["latency"]["p50_ms"])
    table = [{"label": r["label"], "p50_ms": r["latency"]["p50_ms"], "images_per_s": r["images_per_s"],
              "ratio_vs_eager": r.get("ratio_vs_eager"), "parity": "pass" if r["parity"]["passed"] else "FAIL",
              "status": "ok", "timing_reliable": (r.get("reliability") or {}).get("reliable", True)}
             for r in measured]
    table += [{"label": r["label"], "status": r["status"], "reason": r.get("reason")}
              for r in at_size if r["status"] != "ok"]
    return table


def picks(rows: list[dict], batch_sizes: tuple[int, ...] | list[int]) -> list[dict[str, Any]]:
    result = []
    for batch_size in batch_sizes:
        best = fastest_passing(rows, batch_size)
        dtypes = dict.fromkeys(r["dtype"] for r in rows)
        by_dtype = {d: (row["label"] if (row := fastest_passing(rows, batch_size, d)) else None) for d in dtypes}
        result.append({"batch_size": batch_size, "fastest": best["label"] if best else None,
                       "fastest_p50_ms": best["latency"]["p50_ms"] if best else None,
                       "fastest_ratio_vs_eager": best.get("ratio_vs_eager") if best else None,
                       "fastest_by_dtype": by_dtype, "table": justification(rows, batch_size)})
    return result


@dataclass
class AutoChoice:
    runtime: str
    channels_last: bool
    dtype: str
    batch_size: int
    source: str
    reason: str
    table: list[dict[str, Any]] = field(default_factory=list)
    streams: int = 1
    micro_batch: int | None = None
    int8_remainder: str = "fp32"  # OpenVINO int8's float remainder (bench measured both where the CPU has bf16)
    threads: int | None = None  # the intra-op threads it was measured with (None: documents without the count)
    best_peer: str | None = None  # the fastest hand-written recipe of the bench (bench/peers.py)
    ratio_to_best_peer: float | None = None  # paired: the pick's p50 over the best peer's (< 1: the pick is faster)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def applied_to(self, target: Target) -> Target:
        """``target`` (runtime "auto") with the chosen runtime, layout, OpenVINO options and thread count; a
        --threads, and an OpenVINO option (--streams, --micro-batch, --int8-remainder) the user gave, win, as the
        user asked; OpenVINO's options on another pick are said and dropped."""
        picked = {"streams": self.streams, "micro_batch": self.micro_batch, "int8_remainder": self.int8_remainder}
        given = {name: value for name, value in target.options if name in picked}  # only values off their defaults
        others = tuple((k, v) for k, v in target.options if k not in picked)
        if self.runtime == "openvino":
            picked.update(given)
        else:
            if given:
                _logger.warning("--runtime auto picked %s: only OpenVINO takes %s; not used", self.runtime,
                                ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in given.items()))
            picked = {}
        return replace(target, runtime=self.runtime, channels_last=self.channels_last,
                       threads=target.threads or self.threads, options=others).with_options(**picked)


def add_picks(document: BenchDocument, batch_sizes: tuple[int, ...] | list[int]) -> BenchDocument:
    """A sweep document (bench/document.py) completed with its ``pick``."""
    return document.with_picks(picks(document.rows_json(), batch_sizes))


def machine_identity(environment: dict[str, Any]) -> tuple[Any, ...]:
    """What names the machine in an environment block: CPU model name and identity (vendor, family, model,
    stepping: a VM names a Zen 4 and a Zen 5 both "AMD EPYC"), CPU count, ISA and device. A pick measured on
    another CPU (a bench.json copied from a bigger box, with its thread count and ISA-specific winner) does not
    apply here."""
    ident, isa = environment.get("cpu_id"), environment.get("cpu_isa")
    ident = ident if isinstance(ident, dict) else {}  # absent (older bench.json) or mangled: unknown
    return (environment.get("cpu"), tuple(ident.get(key) for key in ("vendor", "family", "model", "stepping")),
            environment.get("cpu_count"), isa.get("name") if isinstance(isa, dict) else None,
            environment.get("device_name"))


def _mismatch(document: BenchDocument, loaded: LoadedModel, device: torch.device, digest: str,
              target: tuple[str | None, str | None], data_config: dict[str, Any]) -> str | None:
    """Why ``document`` cannot give this job its pick (None: it can). ``target`` is this job's --target-weights
    (path, state digest), (None, None) without: a pick passed parity on the weights it was benched with;
    ``data_config`` this job's preprocessing: a pick timed at 224 px says nothing of a 288 px run."""
    model = document.model
    if document.header.schema_version != 1:
        return f"schema version {document.header.schema_version}"
    from ..runners import runtime_names

    if foreign := sorted({row.runtime for row in document.rows if not row.is_peer} - set(runtime_names())):
        return f"runtime(s) this version does not run ({', '.join(map(repr, foreign))})"
    if (model.get("name"), model.get("head"), model.get("state_digest")) != (loaded.name, loaded.head, digest):
        return "another model, head or weights"
    # older documents record the input size only; --test-size changes it (and the crop with it)
    benched_config = model.get("data_config", {"input_size": model.get("input_size")})
    if not isinstance(benched_config, dict) or not isinstance(benched_config.get("input_size"), list):
        return "no input size it was timed at (model.input_size / model.data_config)"
    if differs := [f"{key} {benched_config.get(key)!r} there, {data_config.get(key)!r} here"
                   for key in benched_config if benched_config.get(key) != data_config.get(key)]:
        return f"other inputs ({'; '.join(differs)}: --test-size?)"
    recorded = model.get("target_weights")
    benched: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    if benched.get("state_digest") != target[1]:
        return (f"other --target-weights ({benched.get('path') or 'none'} there, {target[0] or 'none'} here): its "
                "rows were judged on the weights it ran")
    if document.device != str(device) or document.environment.get("torch") != torch.__version__:
        return f"device {document.device}, torch {document.environment.get('torch')}"
    from ..allocator import allocator_kind
    from ..environment import cpu_kind_text, describe_environment

    here = describe_environment(device)
    there_identity, here_identity = machine_identity(document.environment), machine_identity(here)
    if there_identity == here_identity:
        there, now = allocator_kind(document.environment.get("allocator")), allocator_kind(here.get("allocator"))
        if there == now:
            return None
        return (f"another allocator ({there!r} there, {now!r} here: it moves PyTorch's latencies, see "
                "accelport/allocator.py and ACCELPORT_ALLOCATOR)")
    if not isinstance(document.environment.get("cpu_id"), dict):
        return (f"a CPU whose family and model it does not record (an older accelport wrote it; this one is "
                f"{cpu_kind_text(here)})")
    differs = [f"{name} {there!r} there, {now!r} here" for name, there, now in zip(
        ("CPU model name", "CPU vendor/family/model/stepping", "CPU count", "ISA", "device name"), there_identity,
        here_identity, strict=True) if there != now]
    return f"another machine ({cpu_kind_text(document.environment)}: {'; '.join(differs)})"


def _judged_otherwise(data: dict[str, Any], job: JobContext, target: Target) -> str | None:
    """Why the rows of ``data`` were judged or run otherwise than this run would be (None: alike): its fp32 math,
    its criteria in the target's dtype, the thread count it records. A pick that passed looser criteria is no pick
    for a strict run (the run judges it again, but then fails where another configuration would pass)."""
    settings = data.get("settings") or {}
    if settings.get("fp32_math") != job.spec.fp32_math:
        return f"--fp32-math {settings.get('fp32_math')!r} (here {job.spec.fp32_math!r})"
    there = (data.get("criteria") or {}).get(target.dtype)
    if there is not None and there != json.loads(json.dumps(job.criteria_for(target.dtype).to_json())):
        return f"other {target.dtype} criteria (--criterion there or here)"
    threads = settings.get("threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        return f"settings.threads {threads!r} (not a thread count: the file was edited)"
    return None


def _choose(document: dict[str, Any], target: Target, source: str) -> AutoChoice | None:
    from .peers import comparison_for, peer_summary

    best = fastest_passing(document["rows"], target.batch_size, target.dtype)
    if best is None:
        return None
    peer = comparison_for(document, target.dtype, target.batch_size) or {}
    unreliable = ("; its timing was flagged UNRELIABLE there (see that bench's reliability notes): the pick may not "
                  "be the fastest" if not (best.get("reliability") or {}).get("reliable", True) else "")
    return AutoChoice(best["runtime"], best["channels_last"], target.dtype, target.batch_size, source,
                      f"fastest {target.dtype} configuration passing parity at batch {target.batch_size}: "
                      f"{best['label']} ({best['latency']['p50_ms']:.3f} ms p50){peer_summary(peer)}{unreliable}",
                      justification(document["rows"], target.batch_size), streams=best.get("streams", 1),
                      micro_batch=best.get("micro_batch") or None, int8_remainder=best.get("int8_remainder") or "fp32",
                      threads=_usable_thread_count(best.get("threads") or document.get("settings", {}).get("threads")),
                      best_peer=peer.get("best_peer"),
                      ratio_to_best_peer=peer.get("ratio_to_best_peer"))


def _usable_thread_count(measured: int | None) -> int | None:
    """The measured thread count, or all the CPUs this process may use where that is fewer: the same machine under
    ``taskset`` or a smaller cgroup must not be handed the count measured without it."""
    from ..environment import usable_cpus

    cpus = len(usable_cpus())
    if measured is not None and measured > cpus:
        _logger.warning("--runtime auto: the pick was measured with %d threads; this process may use %d CPUs, "
                        "so it runs with %d", measured, cpus, cpus)
        return cpus
    return measured


def _cached_choice(job: JobContext, target: Target) -> AutoChoice | None:
    """From ``bench.json`` or an earlier ``auto_bench.json`` in the out dir, when measured on the same job."""
    from ..runners.cache import weights_digest
    from .document import BenchDocument

    out_dir = Path(job.spec.out_dir)
    digest = weights_digest(job.loaded.model)
    target_weights = ((str(job.target_model.weights.path), weights_digest(job.target_model.model))
                      if job.separate_target else (None, None))
    for path in (out_dir / "bench.json", out_dir / AUTO_BENCH_NAME):
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
            document = BenchDocument.from_json(data)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:  # unreadable, or not a bench document
            _logger.warning("--runtime auto: %s is not a bench document this version reads (%s: %s); measuring "
                            "instead", path, type(exc).__name__, one_line(str(exc), 120))
            continue
        try:
            mismatch = _mismatch(document, job.loaded, job.device, digest, target_weights,
                                 json.loads(json.dumps(job.data_config.to_json())))  # lists, as the file has them
            mismatch = mismatch or _judged_otherwise(data, job, target)
        except (AttributeError, TypeError, KeyError, ValueError) as exc:  # a hand-edited block of the wrong kind
            mismatch = f"an environment this version cannot read ({type(exc).__name__}: {one_line(str(exc), 80)})"
        if mismatch is not None:
            _logger.info("--runtime auto: %s was measured for %s; not used", path, mismatch)
        elif choice := _choose(data, target, str(path)):
            _logger.info("--runtime auto: %s (from %s)", choice.reason, path)
            return choice
        elif _measured(data["rows"], target):
            return _eager_fallback(data, target, str(path))
        else:
            _logger.info("--runtime auto: %s was measured for this job but not in %s at batch %d; not used", path,
                         target.dtype, target.batch_size)
    return None


def _measured(rows: list[dict[str, Any]], target: Target) -> bool:
    return any(r["batch_size"] == target.batch_size and r["dtype"] == target.dtype and r.get("kind") != "peer"
               for r in rows)


def _eager_fallback(document: dict[str, Any], target: Target, source: str) -> AutoChoice:
    """Eager, said so, when the bench measured the target's dtype and batch size and nothing passed: measuring
    again would time the same configurations against the same criteria."""
    _logger.warning("--runtime auto: no %s configuration passed parity at batch %d in %s; using eager", target.dtype,
                    target.batch_size, source)
    return AutoChoice("eager", False, target.dtype, target.batch_size, source,
                      f"no configuration passed parity in {source}; eager used",
                      justification(document["rows"], target.batch_size))


def resolve_auto(job: JobContext, target: Target, images: torch.Tensor, *, warmup: int, iters: int) -> AutoChoice:
    """The runtime and layout for ``--runtime auto``: cached bench.json when it fits, else a short sweep of the
    same job (its spec, device and numeric settings as they are) at the target's dtype and batch size."""
    from .config import BenchConfig
    from .document import sweep_document

    cached = _cached_choice(job, target)
    if cached is not None:
        return cached
    bench = BenchConfig(spec=job.spec, dtypes=(target.dtype,), batch_sizes=(target.batch_size,),
                        warmup=min(warmup, 3), iters=min(iters, 20), progress=False,
                        calibration=target.option("calibration"),
                        threads=(target.threads,) if target.threads else ())
    _logger.info("--runtime auto: no matching bench.json in %s; sweeping %s at batch %d, %s", job.spec.out_dir,
                 ", ".join(bench.runtimes), target.batch_size, target.dtype)
    from .threads import intra_op_threads

    with intra_op_threads(bench.thread_counts()[0]) as threads:
        document = add_picks(sweep_document(job, bench, images, threads), bench.batch_sizes)
    data = document.to_json()
    path = write_json_atomic(Path(job.spec.out_dir) / AUTO_BENCH_NAME, data)
    write_text_atomic(path.with_suffix(".md"), document.to_markdown())
    choice = _choose(data, target, str(path)) or _eager_fallback(data, target, str(path))
    _logger.info("--runtime auto: %s", choice.reason)
    return choice
