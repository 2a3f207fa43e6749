"""Real images through the model's own preprocessing (timm's data config and eval transform)."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from timm.data import create_transform, resolve_model_data_config
from timm.data.transforms import ResizeKeepRatio
from torchvision.transforms import Resize

from .errors import InputError
from .formatting import listed

_logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
MAX_RESIZED_PIXELS = 64_000_000  # an 8000 x 8000 photograph; ~0.25 GB as Pillow's RGB after the resize
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


def _walk(root: Path) -> Iterator[Path]:
    """Files under ``root``, following symlinked folders (a class folder is often a link), each real folder once."""
    seen: set[tuple[int, int]] = set()
    def unreadable(error: OSError) -> None:  # os.walk skips a folder it cannot list, without a word
        raise InputError(f"--images {error.filename}: cannot be listed ({error.strerror})")

    for folder, subfolders, files in os.walk(root, followlinks=True, onerror=unreadable):
        stat = os.stat(folder)
        if (stat.st_dev, stat.st_ino) in seen:  # a symlink loop, or a second link to a folder already listed
            _logger.warning("%s: folder already listed (symlink loop or duplicate link); not listed again", folder)
            subfolders[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        yield from (Path(folder) / name for name in files)


def discover_images(inputs: list[str | Path] | None) -> list[Path]:
    """Expand files and folders (recursively, by image extension, sorted) into a list of image paths."""
    if not inputs:
        if not DEFAULT_SAMPLES_DIR.is_dir():  # e.g. a packager stripped the package data
            raise InputError(f"no --images given and the bundled samples ({DEFAULT_SAMPLES_DIR}) are not there; "
                             "pass --images FILE_OR_FOLDER")
        inputs = [DEFAULT_SAMPLES_DIR]
    found: list[Path] = []
    for item in inputs:
        if not str(item):  # Path("") is the current folder: a stray '' would judge whatever lies below it
            raise InputError("--images '': an empty path; give an image file or folder")
        path = Path(item)
        if path.is_dir():
            named = [p for p in _walk(path) if p.suffix.lower() in IMAGE_EXTENSIONS]
            found.extend(sorted(p for p in named if p.is_file()))
            if others := sorted(str(p) for p in named if not p.is_file()):
                _logger.warning("%s: %d path(s) with an image name are not regular files (a dangling link, a pipe, "
                                "a socket), not read: %s", path, len(others), ", ".join(others[:5])
                                + (", ..." if len(others) > 5 else ""))
        elif path.is_file():
            found.append(path)
        elif path.exists():  # /dev/null, a FIFO, a socket: nothing an image can be read from
            raise InputError(f"--images {path}: not a regular file or a folder")
        else:
            raise InputError(f"--images {path}: no such file or folder")
    if not found:
        raise InputError(f"--images {', '.join(map(str, inputs))}: no image files found "
                         f"({', '.join(IMAGE_EXTENSIONS)})")
    return _without_repeats(found)


def _without_repeats(paths: list[Path]) -> list[Path]:
    """Each file once (by its real path), first mention kept: a file named twice (a folder and a file in it, a
    link) would weigh double in the pooled metrics and look like two agreeing images to the input-blind check."""
    first: dict[str, Path] = {}
    repeats: list[str] = []
    for path in paths:
        real = os.path.realpath(path)
        if real in first:
            repeats.append(str(path) if str(path) == str(first[real]) else f"{path} (= {first[real]})")
            continue
        first[real] = path
    if repeats:
        _logger.warning("--images: %d file(s) named more than once, each compared once: %s",
                        len(repeats), listed(repeats))
    return list(first.values())


def resized_pixels(size: tuple[int, int], transform: Any) -> int:
    """Pixels of a ``(width, height)`` image after the transform's resize step (before its crop).

    timm's eval transform scales the short side to the crop's size / crop_pct, so an image of 2 x 20000
    pixels (a few hundred bytes as a PNG) becomes 256 x 2,560,000: gigabytes, whatever the file size.
    """
    width, height = size
    for step in getattr(transform, "transforms", [transform]):
        target: Any = getattr(step, "size", None)
        if isinstance(step, ResizeKeepRatio):
            ratios = (height / target[0], width / target[1])
            ratio = max(ratios) * step.longest + min(ratios) * (1.0 - step.longest)
            return round(width / ratio) * round(height / ratio)
        if isinstance(step, Resize):
            if isinstance(target, int) or len(target) == 1:  # the short side becomes ``target`` (torchvision's rule)
                short = target if isinstance(target, int) else target[0]
                return short * int(short * max(width, height) / min(width, height))
            return target[0] * target[1]
    return width * height


def _check_size(image: Image.Image, transform: Any, path: Path) -> None:
    """Refuse, from the header alone, an image whose resize would need an absurd amount of memory."""
    pixels = resized_pixels(image.size, transform)
    if pixels > MAX_RESIZED_PIXELS:
        width, height = image.size
        raise InputError(f"{path}: {width}x{height} pixels would be resized to {pixels / 1e6:.0f} megapixels "
                         f"(limit {MAX_RESIZED_PIXELS / 1e6:.0f}); a decompression bomb or an extreme aspect ratio")


_NOTED_LARGE: set[Path] = set()


def _note_large(image: Image.Image, path: Path) -> None:
    """Say, in the log and naming the file, what Pillow's own ``DecompressionBombWarning`` says without a name
    (the command line silences that warning: see ``quiet_pillow_size_warning``)."""
    width, height = image.size
    if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS and path not in _NOTED_LARGE:
        _NOTED_LARGE.add(path)  # once per file: a run's ImageStream decodes each file once per pass
        _logger.warning("%s: %dx%d pixels, more than Pillow's %d-pixel guard; decoding it takes ~%.0f MB",
                        path, width, height, Image.MAX_IMAGE_PIXELS, width * height * 3 / 1e6)


def quiet_pillow_size_warning() -> None:
    """Silence Pillow's nameless ``DecompressionBombWarning`` for this process (the command line's choice: the
    log line of ``open_rgb`` names the file instead). Process-wide, because decoding runs in threads."""
    import warnings

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


_DARK: dict[Path, str] = {}  # image -> what was said of it: once in the log, and in the reports (dark_image_notes)


def dark_image_notes(paths: Sequence[Path]) -> list[tuple[str, str]]:
    """(path, note) for each of ``paths`` that decoded nearly black (a 16-bit image holding 8-bit values): the log
    said so, but a reader of report.md saw only a PASS on a black image."""
    return [(str(path), _DARK[path]) for path in paths if path in _DARK]


def _to_8bit(image: Image.Image, path: Path) -> Image.Image:
    """16-bit and 32-bit grey images scaled to 8 bits (Pillow's convert clips them: all white or all black)."""
    values = np.asarray(image)
    if image.mode.startswith("I;16") or (image.mode == "I" and image.format == "PNG"):
        scale = 255.0 / 65535.0  # a PNG holds 16 bits here, whichever mode this Pillow opens it in
    elif image.mode == "I":  # a 32-bit integer TIFF: its range says which convention it follows
        top: float = int(values.max(initial=0))
        if values.min(initial=0) < 0 or top > 65535:
            raise InputError(f"{path}: 32-bit integer image with values up to {top}; "
                             "convert it to 8 or 16 bits")
        scale = 1.0 if top <= 255 else 255.0 / 65535.0
    else:  # "F": floats in [0, 1] (the usual convention) or already in [0, 255]
        low, top = float(np.nanmin(values)), float(np.nanmax(values))
        if not np.isfinite(values).all() or low < 0 or top > 255:
            raise InputError(f"{path}: float image with values in [{low:g}, {top:g}] (or NaN/Inf); "
                             "expected [0, 1] or [0, 255]")
        scale = 255.0 if top <= 1.0 else 1.0
    grey = np.clip(np.rint(values.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    if scale < 1.0 and values.size and (top := int(values.max())) < 4096 and path not in _DARK:
        _DARK[path] = (f"a 16-bit grey image whose values reach only {top} of 65535 (8-bit data stored in 16 bits?) "
                       "is nearly black once scaled to 8 bits; the model sees it so")
        _logger.warning("%s: %s", path, _DARK[path])  # once, not at each pass that decodes it
    return Image.fromarray(grey, mode="L")


def open_rgb(path: Path, transform: Any = None) -> Image.Image:
    """Decode fully (so truncation is caught here) and convert grey-scale, high bit-depth, palette and RGBA to RGB.

    With ``transform``, an image whose resize would be absurd is refused from its header, before decoding.
    """
    try:
        with Image.open(path) as img:
            if transform is not None:
                _check_size(img, transform, path)
            _note_large(img, path)
            img.load()
            if img.mode in HIGH_DEPTH_MODES:
                img = _to_8bit(img, path)
            if img.mode == "P":
                img = img.convert("RGBA")  # Pillow warns on transparent palettes straight to RGB; alpha goes anyway
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc).strip() or type(exc).__name__
        raise InputError(f"{path}: not a readable image ({reason})") from None


def preprocess_file(path: Path, transform: Any) -> torch.Tensor:
    """One image file through the model's transform, size-checked first (run's stream and eval's workers)."""
    return transform(open_rgb(path, transform))


@dataclass
class ImageBatch:
    """Preprocessed images (``[N, C, H, W]`` float32) and the files they came from."""

    tensor: torch.Tensor
    paths: list[Path]
    skipped: list[tuple[Path, str]]


def _preprocess_or_skip(path: Path, transform: Any, skip_bad: bool, skipped: list[tuple[Path, str]]):
    try:
        return preprocess_file(path, transform)
    except InputError as exc:
        if not skip_bad:
            raise
        _logger.warning("Skipping %s", exc)
        skipped.append((path, str(exc)))
        return None


def load_images(paths: list[Path], transform, skip_bad: bool = False) -> ImageBatch:
    """Decode and preprocess every image into one tensor; a bad file is an InputError, or a warning and a skip."""
    stream = ImageStream(paths, transform, skip_bad)
    tensors = list(stream.batches(1))
    return ImageBatch(torch.cat(tensors), stream.paths, stream.skipped)


class ImageStream:
    """A run's images, decoded batch by batch: memory holds one batch, whatever the number of images.

    Each pass decodes again (cheap beside the model); the first one finds the bad files, later ones read
    only the good ones. ``paths`` and ``skipped`` are complete after the first full pass. Every image must decode to
    the same pixels in every pass: a file replaced between the reference's pass and the target's would otherwise
    fail (or pass) a port for what the file did.
    """

    def __init__(self, paths: list[Path], transform: Any, skip_bad: bool = False):
        self.transform = transform
        self.skip_bad = skip_bad
        self.paths: list[Path] = []
        self.skipped: list[tuple[Path, str]] = []
        self._candidates = list(paths)
        self._checked = False
        self._digests: dict[Path, bytes] = {}  # each image's decoded pixels, from the pass that first read it

    def _tensors(self) -> Iterator[tuple[Path, torch.Tensor]]:
        skipped: list[tuple[Path, str]] = []
        for path in self._candidates:
            try:
                tensor = _preprocess_or_skip(path, self.transform, self.skip_bad and not self._checked, skipped)
            except InputError as exc:
                if path not in self._digests:
                    raise
                raise InputError(f"{path}: changed while this command read it (it was read in an earlier pass, "
                                 f"which the reference or the target saw; now: {exc}); run again once the images "
                                 "stay as they are") from None
            if tensor is not None:
                digest = hashlib.blake2b(memoryview(tensor.contiguous().numpy()).cast("B"), digest_size=16).digest()
                if self._digests.setdefault(path, digest) != digest:
                    raise InputError(f"{path}: changed while this command read it (it decodes to other pixels than "
                                     "in the earlier pass, which the reference or the target saw); run again once "
                                     "the images stay as they are")
                yield path, tensor
        if not self._checked:
            self.skipped = skipped

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Every readable image once, in order, as ``[<= batch_size, C, H, W]`` tensors."""
        chunk, kept = [], []
        for path, tensor in self._tensors():
            chunk.append(tensor)
            kept.append(path)
            if len(chunk) == batch_size:
                yield torch.stack(chunk)
                chunk = []
        if chunk:
            yield torch.stack(chunk)
        if not kept:
            raise InputError("no readable images left after skipping bad files: "
                             + ", ".join(str(p) for p, _ in self.skipped))
        if not self._checked:
            self.paths, self._candidates, self._checked = kept, kept, True

    def head(self, count: int) -> torch.Tensor:
        """The first ``count`` readable images (fewer if there are fewer): the latency batch's material."""
        first = []
        for _, tensor in self._tensors():
            first.append(tensor)
            if len(first) == count:
                break
        if not first:
            raise InputError("no readable images left after skipping bad files: "
                             + ", ".join(str(p) for p in self._candidates))
        return torch.stack(first)
