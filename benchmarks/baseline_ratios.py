"""Measure what a correct half-precision implementation gets wrong, and what a porting fault adds.

For several timm architectures (random init, the seeded atto checkpoint for ConvNeXt V2) and both heads, on the
bundled samples: the CPU fp32 reference, the CPU eager baseline in bf16/fp16 (NCHW), and other correct
implementations of the same precision (eager channels-last; optionally torch.compile). Prints per configuration the
worst per-image ratio of the target's error to the baseline's (rel L2, and share of elements outside 1e-2), the
largest reference top-1 margin a correct target flipped, and for the atto weights the same ratios under faults.

    python benchmarks/baseline_ratios.py [--compile] > docs/baseline_ratios.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import timm
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from accelport.metrics import compare_per_sample, relative_errors  # noqa: E402
from accelport.preprocess import data_config_for, load_images, make_transform  # noqa: E402

ARCHS = ("convnextv2_atto", "resnet18", "vit_tiny_patch16_224", "mobilenetv3_small_050", "levit_128s")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def model_for(arch: str, features: bool) -> torch.nn.Module:
    from checkpoints import seeded_state_dict

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False)
    if arch == "convnextv2_atto":
        model.load_state_dict(seeded_state_dict())
    if features:
        model.reset_classifier(0)
    return model.eval()


@torch.no_grad()
def outputs(model: torch.nn.Module, images: torch.Tensor, dtype: torch.dtype, channels_last: bool = False,
            compiled: bool = False) -> np.ndarray:
    m = copy.deepcopy(model).to(dtype)
    x = images.to(dtype)
    if channels_last:
        m, x = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    if compiled:
        m = torch.compile(m)
    return m(x).float().numpy()


def errors(reference: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rel_l2 = np.array([m.rel_l2_err for m in compare_per_sample(reference, target)])
    outside = (relative_errors(reference, target) > 1e-2).mean(axis=1)
    return rel_l2, outside


def ratios(reference: np.ndarray, baseline: np.ndarray, target: np.ndarray) -> dict[str, float]:
    b_l2, b_out = errors(reference, baseline)
    t_l2, t_out = errors(reference, target)
    flipped = [reference[i].max() - reference[i][int(np.argmax(target[i]))] for i in range(len(reference))
               if np.argmax(target[i]) != np.argmax(reference[i])]
    return {"baseline_rel_l2_max": float(b_l2.max()), "target_rel_l2_max": float(t_l2.max()),
            "rel_l2_ratio_max": float((t_l2 / np.maximum(b_l2, 1e-12)).max()),
            "baseline_outside_max": float(b_out.max()), "target_outside_max": float(t_out.max()),
            "outside_ratio_max": float((t_out / np.maximum(b_out, 1e-3)).max()),
            "flipped_margin_max": float(max(flipped, default=0.0)),
            "baseline_max_abs_max": float(np.abs(baseline - reference).max())}


def faults(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    def noisy(name: str, rel: float) -> torch.nn.Module:
        m = copy.deepcopy(model)
        p = m.get_parameter(name)
        p.data += rel * p.data.abs().mean() * torch.randn(p.shape, generator=torch.Generator().manual_seed(0))
        return m

    out = {}
    for where, name in (("early", "stem.0.weight"), ("middle", "stages.2.blocks.3.mlp.fc1.weight"),
                        ("late", "stages.3.blocks.1.mlp.fc2.weight")):
        for rel in (1e-3, 1e-2, 1e-1):
            out[f"noise {rel:g} {where}"] = noisy(name, rel)
    for scale, name in ((1.1, "stages.2.blocks.3.norm.weight"), (1.1, "head.norm.weight")):
        m = copy.deepcopy(model)
        m.get_parameter(name).data *= scale
        out[f"{name} x{scale}"] = m
    m = copy.deepcopy(model)
    m.stages[2].blocks[3].mlp.grn.weight.data *= 0.1
    out["grn gamma x0.1"] = m
    m = copy.deepcopy(model)
    w = m.stages[3].blocks[1].mlp.fc2.weight.data
    w[[0, 1]] = w[[1, 0]]
    out["channel swap late fc2"] = m
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    from accelport.arguments import set_allocator_or_exit

    set_allocator_or_exit(parser)  # as the CLI does (accelport/allocator.py): eager without page faults
    torch.set_num_threads(2)
    paths = sorted(p for p in (ROOT / "samples").iterdir() if p.suffix in (".jpg", ".png"))
    results: dict[str, dict] = {"clean": {}, "faults": {}}
    for arch in ARCHS:
        for features in (False, True):
            model = model_for(arch, features)
            images = load_images(paths, make_transform(data_config_for(model))).tensor
            reference = outputs(model, images, torch.float32)
            for dname, dtype in DTYPES.items():
                baseline = outputs(model, images, dtype)
                variants = {"channels_last": outputs(model, images, dtype, channels_last=True),
                            "batch1": np.concatenate([outputs(model, images[i:i + 1], dtype) for i in range(6)])}
                if args.compile:
                    variants["compile"] = outputs(model, images, dtype, compiled=True)
                for vname, target in variants.items():
                    key = f"{arch} {'features' if features else 'logits'} {dname} {vname}"
                    results["clean"][key] = ratios(reference, baseline, target)
                    print(key, json.dumps(results["clean"][key]), file=sys.stderr, flush=True)
    model = model_for("convnextv2_atto", False)
    images = load_images(paths, make_transform(data_config_for(model))).tensor
    reference = outputs(model, images, torch.float32)
    for dname, dtype in DTYPES.items():
        baseline = outputs(model, images, dtype)
        for fname, faulty in faults(model).items():
            key = f"atto {dname} {fname}"
            results["faults"][key] = ratios(reference, baseline, outputs(faulty, images, dtype))
            print(key, json.dumps(results["faults"][key]), file=sys.stderr, flush=True)
    json.dump(results, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
