"""Real images through the model's own preprocessing (timm's data config and eval transform)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from timm.data import create_transform, resolve_model_data_config

from .errors import InputError

_logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
DEFAULT_SAMPLES_DIR = Path(__file__).resolve().parent / "samples"  # package data: installed with accelport


@dataclass(frozen=True)
class DataConfig:
    """timm's resolved preprocessing for the model, and whether it is the train or test size."""

    values: dict[str, Any]
    size_mode: str  # "train" | "test"

    def to_json(self) -> dict[str, Any]:
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in self.values.items()}
        return {**values, "size_mode": self.size_mode}


def data_config_for(model: torch.nn.Module, test_size: bool = False) -> DataConfig:
    """The pretrained config's input size, crop, interpolation and mean/std; the test size on request."""
    values = resolve_model_data_config(model, use_test_size=test_size)
    return DataConfig(values=dict(values), size_mode="test" if test_size else "train")


def make_transform(config: DataConfig):
    return create_transform(**config.values, is_training=False)


def discover_images(inputs: list[str | Path] | None) -> list[Path]:
    """Expand files and folders (recursively, by image extension, sorted) into a list of image paths."""
    if not inputs:
        if not DEFAULT_SAMPLES_DIR.is_dir():  # e.g. a packager stripped the package data
            raise InputError(f"no --images given and the bundled samples ({DEFAULT_SAMPLES_DIR}) are not there; "
                             "pass --images FILE_OR_FOLDER")
        inputs = [DEFAULT_SAMPLES_DIR]
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"--images {path}: no such file or folder")
    if not found:
        raise InputError(f"--images {', '.join(map(str, inputs))}: no image files found "
                         f"({', '.join(IMAGE_EXTENSIONS)})")
    return found


def open_rgb(path: Path) -> Image.Image:
    """Decode fully (so truncation is caught here) and convert grey-scale, palette and RGBA images to RGB."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode == "P":
                img = img.convert("RGBA")  # keeps palette transparency meaningful before dropping alpha
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc).strip() or type(exc).__name__
        raise InputError(f"{path}: not a readable image ({reason})") from None


@dataclass
class ImageBatch:
    """Preprocessed images (``[N, C, H, W]`` float32) and the files they came from."""

    tensor: torch.Tensor
    paths: list[Path]
    skipped: list[tuple[Path, str]]


def load_images(paths: list[Path], transform, skip_bad: bool = False) -> ImageBatch:
    """Decode and preprocess every image; a bad file is an InputError, or a warning and a skip."""
    tensors, kept, skipped = [], [], []
    for path in paths:
        try:
            tensors.append(transform(open_rgb(path)))
            kept.append(path)
        except InputError as exc:
            if not skip_bad:
                raise
            _logger.warning("Skipping %s", exc)
            skipped.append((path, str(exc)))
    if not tensors:
        raise InputError("no readable images left after skipping bad files: " + ", ".join(str(p) for p, _ in skipped))
    return ImageBatch(torch.stack(tensors), kept, skipped)
