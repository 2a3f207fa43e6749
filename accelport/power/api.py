"""``run_power``: the reference (and baseline) once, then every standard fault through the run's own verdict.

Each fault is judged exactly as ``accelport run --target-weights faulty_copy`` would judge it: ``compare_outputs``
with the same-precision baseline and the weights scan, plus the structural proof in strict fp32 (``proofs``). The
fault counts as detected when that verdict fails. For the smallest detected size of each fault type, the layer
comparison (``layers``) is asked which module diverges first, and whether that is the faulted module or its parent.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..criteria import criteria_for
from ..devices import caller_torch_state
from ..environment import describe_environment
from ..errors import UsageError, WeightsError
from ..formatting import listed, printable
from ..job.context import open_job
from ..job.result import CommandResult
from ..job.spec import with_overrides
from ..layers.capture import TargetCast
from ..layers.compare import compare_layers
from ..metrics import worst_sample_rel_l2
from ..out_dir_lock import job_scope
from ..parity import compare_outputs
from ..proofs import baseline_outputs, nonfinite_weights, structural_proof
from ..runners import DTYPES, Runner, create_runner, infer_all
from .config import PowerConfig, validate
from .document import FaultLocation, FaultRow, PowerDocument
from .faults import Fault, choose_sites, standard_faults
from .report import write_power_artifacts

_logger = logging.getLogger(__name__)


class PowerResult(CommandResult[PowerDocument]):
    """The typed power document (``data``: power.json) and the files written."""


@caller_torch_state()
@job_scope
def run_power(config: PowerConfig | None = None, **overrides: Any) -> PowerResult:
    """Inject every standard fault into a copy of the weights, judge each as ``run`` would, and write the report."""
    config = with_overrides(config or PowerConfig(), **overrides)
    validate(config)
    job = open_job(config.spec)
    if bad := nonfinite_weights({"reference": job.loaded.model}, report=False):  # every fault would be "detected"
        tensors = [key.partition(": ")[2] for key in bad]
        raise WeightsError(f"--weights {job.loaded.weights.path}: {listed(tensors)} hold(s) NaN/Inf: power injects "
                           "faults into weights that compute; fix the checkpoint first")
    batch = job.image_batch()
    target = config.target
    names = [printable(str(p)) for p in batch.paths]
    is_classifier = job.is_classifier
    precision, criteria = job.precision(target.dtype), job.criteria_for(target.dtype)

    def infer(runner: Runner) -> np.ndarray:
        return infer_all(runner, batch.tensor.split(target.batch_size))

    def on_reference(model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
        with create_runner("eager", model, torch.device("cpu"), "fp32") as reference_runner:
            return infer_all(reference_runner, images.split(target.batch_size))

    reference = on_reference(job.loaded.model, batch.tensor)  # once, for every fault
    baseline = baseline_outputs(job.loaded.model, precision, infer)
    with create_runner(target.runtime, job.loaded.model, job.device, target.dtype, target.channels_last,
                       **target.runner_options()) as runner:
        clean = compare_outputs(reference, infer(runner), criteria, is_classifier, baseline=baseline,
                                sample_names=names)
    if failing := [f"{c.name} {c.value:.4g}" for c in clean.checks if not c.passed]:
        raise UsageError(f"power: the target without any fault already fails run's checks ({', '.join(failing)}): "
                         "every injected fault would read as detected, so no detection size would mean anything. "
                         "Make `accelport run` pass with the same --runtime, --dtype and --criterion first")
    first = batch.tensor[: target.batch_size]  # the sites are probed on the first batch
    sites = choose_sites(job.loaded.model, config.sizes, job.spec.seed,
                         lambda faulty: worst_sample_rel_l2(reference[: len(first)], on_reference(faulty, first)))

    rows: list[FaultRow] = []
    located: set[str] = set()
    for fault in standard_faults(job.loaded.model, config.sizes, job.spec.seed, sites):
        faulty = fault.model(job.loaded.model)

        def make(dtype: str, model: torch.nn.Module = faulty) -> Runner:
            return create_runner(target.runtime, model, job.device, dtype, target.channels_last,
                                 **target.runner_options())

        with make(target.dtype) as runner:
            outputs = infer(runner)
        parity = compare_outputs(reference, outputs, criteria, is_classifier, baseline=baseline, sample_names=names,
                                 nonfinite_weights=nonfinite_weights({"target": faulty}, report=False))
        proof = structural_proof(precision, True, lambda: make("fp32"), job.device, job.spec.fp32_math, infer,
                                 reference, outputs, is_classifier, names) if np.isfinite(outputs).all() else None
        failed = [c.name for c in parity.checks if not c.passed] + (["structural_proof"] if proof and proof.failed
                                                                     else [])
        location = None
        if failed and config.locate and fault.kind not in located:
            located.add(fault.kind)
            location = _locate(job.loaded.model, faulty, batch.tensor[: target.batch_size], criteria, config,
                               job.device, fault)
        rows.append(FaultRow(fault.kind, fault.size, fault.parameter, fault.module, tuple(failed),
                             parity.to_json()["worst_sample_rel_l2"], location, site=fault.site,
                             reference_rel_l2=worst_sample_rel_l2(reference, on_reference(faulty, batch.tensor))))
        _logger.info("power: %s%s: %s", fault.kind, "" if fault.size is None else f" {fault.size:g}",
                     "detected" if failed else "passed")
    document = PowerDocument(job.loaded.name, str(job.device), target.runtime, target.dtype, precision, criteria,
                             len(names), tuple(config.sizes), round(job.wall_s(), 3), tuple(rows),
                             tuple(sites.values()), weights_sha256=job.loaded.weights.sha256,
                             environment=describe_environment(job.device))
    return PowerResult(document, write_power_artifacts(Path(job.spec.out_dir), document))


def _locate(reference: torch.nn.Module, faulty: torch.nn.Module, images: torch.Tensor, criteria: Any,
            config: PowerConfig, device: torch.device, fault: Fault) -> FaultLocation:
    """Which module the layer comparison names first, in the target's precision and else in strict fp32."""
    result = FaultLocation(config.target.dtype, {}, False)
    dtype_asked, channels_last = config.target.dtype, config.target.channels_last
    for dtype in dict.fromkeys((dtype_asked, "fp32")):
        target = copy.deepcopy(faulty).to(device, DTYPES[dtype]).eval()  # the fp32 pass needs unrounded weights
        judge_by = criteria if dtype == dtype_asked else criteria_for("fp32")
        comparison = compare_layers(reference, target, [images], judge_by, ("chained", "isolated"),
                                    TargetCast(device, DTYPES[dtype], channels_last))
        first = {mode: (found[1].key if (found := comparison.first_divergent(mode)) else None)
                 for mode in comparison.modes}
        result = FaultLocation(dtype, first, any(fault.named_by(name) for name in first.values()))
        if result.names_module:
            break
    return result
