"""Measure the fp32-fast (TF32/HF32) baseline: what TF32 rounding costs, and what other correct TF32 targets score.

For convnextv2_atto (seeded checkpoint), resnet18 and vit_tiny_patch16_224 (random init, seed 0), on the bundled
samples: the CPU fp32 reference, the baseline ``accelport.emulation.emulate_tf32`` (round to nearest), and other
correct TF32 implementations: the same rounding in channels-last and at batch 1, and truncation to 10 mantissa bits
(what a kernel that feeds raw fp32 registers to the tensor cores does). Each is judged as ``accelport run`` judges an
fp32-fast target (``parity.compare_outputs`` with the fp32-fast criteria and the baseline); the raw worst-image
rel-L2 ratio (no floor) is printed too. Then porting faults of the atto weights under TF32: the verdict with and
without the baseline ratio rule.

    python benchmarks/tf32_baseline.py > benchmarks/results/tf32_baseline.json
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import timm
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from accelport.criteria import criteria_for  # noqa: E402
from accelport.emulation import emulate_tf32  # noqa: E402
from accelport.metrics import compare_per_sample  # noqa: E402
from accelport.parity import compare_outputs  # noqa: E402
from accelport.preprocess import data_config_for, load_images, make_transform  # noqa: E402

ARCHS = ("convnextv2_atto", "resnet18", "vit_tiny_patch16_224")


def truncate_to_tf32(tensor: torch.Tensor) -> torch.Tensor:
    """Round toward zero at 10 mantissa bits: the low 13 bits dropped."""
    if tensor.dtype != torch.float32:
        return tensor
    return (tensor.view(torch.int32) & ~0x1FFF).view(torch.float32)


def model_for(arch: str) -> torch.nn.Module:
    from checkpoints import seeded_state_dict

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False)
    if arch == "convnextv2_atto":
        model.load_state_dict(seeded_state_dict())
    return model.eval()


@torch.no_grad()
def outputs(model: torch.nn.Module, images: torch.Tensor, channels_last: bool = False) -> np.ndarray:
    if channels_last:
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    return model(images).numpy()


def judged(reference: np.ndarray, baseline: np.ndarray, target: np.ndarray) -> dict:
    """The fp32-fast verdict with the baseline, the absolute-only verdict, and the raw errors and ratios."""
    with_rule = compare_outputs(reference, target, criteria_for("fp32-fast"), True, baseline=baseline)
    absolute = compare_outputs(reference, target, criteria_for("fp32-fast"), True)
    base_l2 = np.array([m.rel_l2_err for m in compare_per_sample(reference, baseline)])
    target_l2 = np.array([m.rel_l2_err for m in compare_per_sample(reference, target)])
    data = with_rule.to_json()
    return {"baseline_rel_l2_max": float(base_l2.max()), "target_rel_l2_max": float(target_l2.max()),
            "raw_rel_l2_ratio_max": float((target_l2 / np.maximum(base_l2, 1e-12)).max()),
            "rel_l2_ratio_max": max(r["rel_l2_ratio"] for r in data["baseline"]["per_image"]),
            "outside_ratio_max": max(r["outside_ratio"] for r in data["baseline"]["per_image"]),
            "baseline_outside_max": max(r["baseline_outside"] for r in data["baseline"]["per_image"]),
            "target_outside_max": max(r["target_outside"] for r in data["baseline"]["per_image"]),
            "passed_with_baseline": with_rule.passed, "passed_absolute_only": absolute.passed,
            "failed_checks": [c.name for c in with_rule.checks if not c.passed]}


def faults(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    out = {}
    sites = (("middle", "stages.2.blocks.1.mlp.fc1.weight"), ("late", "stages.3.blocks.1.mlp.fc2.weight"))
    for rel in (1e-3, 3e-3, 1e-2, 3e-2, 1e-1):
        for where, name in sites:
            faulty = copy.deepcopy(model)
            p = faulty.get_parameter(name)
            p.data += rel * p.data.abs().mean() * torch.randn(p.shape, generator=torch.Generator().manual_seed(0))
            out[f"noise {rel:g} {where}"] = faulty
    faulty = copy.deepcopy(model)
    w = faulty.stages[3].blocks[1].mlp.fc2.weight.data
    w[[0, 1]] = w[[1, 0]]
    out["channel swap late fc2"] = faulty
    faulty = copy.deepcopy(model)
    faulty.get_parameter("stages.2.blocks.1.norm.weight").data *= 1.1
    out["norm x1.1"] = faulty
    return out


def main() -> None:
    torch.set_num_threads(2)
    paths = sorted(p for p in (ROOT / "samples").iterdir() if p.suffix in (".jpg", ".png"))
    results: dict[str, dict] = {"clean": {}, "faults": {}}
    for arch in ARCHS:
        model = model_for(arch)
        images = load_images(paths, make_transform(data_config_for(model))).tensor
        reference = outputs(model, images)
        emulated = emulate_tf32(model)
        baseline = outputs(emulated, images)
        variants = {"channels_last": outputs(emulated, images, channels_last=True),
                    "batch1": np.concatenate([outputs(emulated, images[i:i + 1]) for i in range(len(images))]),
                    "truncation": outputs(emulate_tf32(model, truncate_to_tf32), images)}
        for name, target in variants.items():
            results["clean"][f"{arch} {name}"] = judged(reference, baseline, target)
            print(f"{arch} {name}", json.dumps(results["clean"][f"{arch} {name}"]), file=sys.stderr, flush=True)
        if arch == "convnextv2_atto":
            for name, faulty in faults(model).items():
                results["faults"][name] = judged(reference, baseline, outputs(emulate_tf32(faulty), images))
                print(name, json.dumps(results["faults"][name]), file=sys.stderr, flush=True)
    json.dump(results, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
