"""Throughput of ``accelport eval``'s stages on a 1,000-image folder: is the data pipeline the bottleneck?

Builds (once) a folder of JPEGs the size of ImageNet-val images (about 500x375, quality 90) by cropping and
resizing the sample photographs, in 10 wnid class folders; then measures
  1. the DataLoader alone (decode + preprocess, no model) with 0, 1 and 2 workers,
  2. the model alone (CPU fp32 eager, preprocessed batch already in memory),
  3. the whole ``accelport eval`` (reference + target + metrics + journal), with its per-stage figures,
and prints and saves them as JSON with the hardware named (default: logs/eval_throughput.json; docs/ is updated
only when asked for with --out). The image folder and eval's output live in a temporary folder that is removed at
the end, unless --folder names a folder to build once and reuse.

    python benchmarks/eval_throughput.py --images 1000 --workers 2 --out docs/eval_throughput_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from accelport.environment import describe_environment  # noqa: E402
from accelport.evaluation import EvalConfig, evaluate  # noqa: E402
from accelport.evaluation.dataset import list_dataset, make_loader  # noqa: E402
from accelport.models import load_model  # noqa: E402
from accelport.preprocess import DEFAULT_SAMPLES_DIR, data_config_for, make_transform  # noqa: E402
from accelport.runners import create_runner  # noqa: E402

CLASSES = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475",
           "n01496331", "n01498041", "n01514668", "n01514859", "n01518878"]


def build_folder(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` JPEGs of ImageNet-val size made from the samples; reused when already complete."""
    if root.is_dir() and sum(1 for _ in root.rglob("*.jpg")) == count:
        return root
    rng = random.Random(seed)
    sources = [Image.open(p).convert("RGB") for p in sorted(DEFAULT_SAMPLES_DIR.iterdir())
               if p.suffix in (".jpg", ".png")]
    for i in range(count):
        image = sources[i % len(sources)]
        w, h = image.size
        cw, ch = rng.randint(w // 2, w), rng.randint(h // 2, h)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        size = (500, 375) if rng.random() < 0.7 else (375, 500)
        crop = image.crop((x, y, x + cw, y + ch)).resize(size, Image.BICUBIC)
        folder = root / CLASSES[i % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        crop.save(folder / f"img_{i:05d}.jpg", quality=90)
    return root


def time_loader(listing, transform, input_size, batch_size: int, workers: int) -> float:
    loader = make_loader(listing.items, transform, batch_size, input_size, workers, pin_memory=False)
    started, count = time.perf_counter(), 0
    for batch in loader:
        count += batch.size
    return count / (time.perf_counter() - started)


def time_model(model, input_size, batch_size: int, batches: int) -> float:
    batch = torch.randn(batch_size, *input_size)
    with create_runner("eager", model, torch.device("cpu"), "fp32") as runner:
        runner.infer(batch)  # warm-up
        started = time.perf_counter()
        for _ in range(batches):
            runner.infer(batch)
        return batch_size * batches / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--folder", default=None,
                        help="build the images here once and keep them for later runs (default: a temporary folder, "
                             "removed at the end)")
    parser.add_argument("--model", default=None, help="timm model (default: accelport's default model)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model-batches", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="passes of the loader-only and model-only timings")
    parser.add_argument("--out", default="logs/eval_throughput.json",
                        help="where the JSON goes (default: %(default)s; docs/eval_throughput_cpu.json is the "
                             "published one, written only when named here)")
    args = parser.parse_args(argv)
    from accelport.arguments import set_allocator_or_exit

    set_allocator_or_exit(parser)  # as the CLI does (accelport/allocator.py): eager without page faults
    with tempfile.TemporaryDirectory(prefix="accelport-eval-throughput-") as scratch:
        report = measure(args, Path(scratch))
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


def measure(args: argparse.Namespace, scratch: Path) -> dict:
    """Every figure of the report; the images (unless --folder) and eval's artifacts go under ``scratch``."""
    folder = build_folder(Path(args.folder) if args.folder else scratch / "images", args.images)
    loaded = load_model(*([args.model] if args.model else []), hub_timeout_s=1.0)
    data_config = data_config_for(loaded.model)
    transform, input_size = make_transform(data_config), tuple(data_config.values["input_size"])
    listing = list_dataset(folder, "auto", loaded.model, loaded.num_classes)

    load_before = os.getloadavg()
    # best of --repeats: other processes on a shared machine only ever slow a pass down
    loader_rates = {w: max(time_loader(listing, transform, input_size, args.batch_size, w) for _ in range(args.repeats))
                    for w in sorted({0, 1, args.workers})}
    model_rate = max(time_model(loaded.model, input_size, args.batch_size, args.model_batches)
                     for _ in range(args.repeats))
    result = evaluate(EvalConfig.of(data=str(folder), out_dir=str(scratch / "eval_out"), device="cpu",
                                    batch_size=args.batch_size, workers=args.workers, hub_timeout_s=1.0,
                                    **({"model": args.model} if args.model else {})))
    doc = result.document
    return {
        "hardware": describe_environment(torch.device("cpu")),
        "load_average_1m_before_and_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "method": "loader and model alone: best of --repeats passes; eval: one run, its own per-stage timers",
        "dataset": {"folder": args.folder or "(temporary, removed)", "images": args.images,
                    "size": "500x375 JPEG q90 (ImageNet-val like)"},
        "batch_size": args.batch_size,
        "data_loader_alone_images_per_s": {f"{w} workers": round(r, 1) for w, r in loader_rates.items()},
        "torch_threads": torch.get_num_threads(),
        "model_alone_cpu_fp32_images_per_s": round(model_rate, 1),
        "eval": {"workers": args.workers, "wall_time_s": doc.header.wall_time_s,
                 "stages": [{**s, "images_per_s": None if s["images_per_s"] is None else round(s["images_per_s"], 1)}
                            for s in doc.throughput.stages],
                 "data_wait_share": round(doc.throughput.data_wait_share, 4),
                 "bottleneck": doc.throughput.bottleneck},
    }


if __name__ == "__main__":
    main()
