"""Ground-truth labels for a dataset folder: class folders, a labels file, or none at all.

Every label ends up as the model's own class index (timm's order). Accepted spellings of one label:
- an ImageNet WordNet id such as ``n01440764``, mapped through timm's ``ImageNetInfo`` for the subset the
  model was trained on (``imagenet-1k`` for 1000 classes, ``imagenet-22k`` ...);
- a non-negative integer, taken as the model's 0-based class index (timm's order = sorted wnids for ImageNet).

Labels files (``--labels PATH``), recognised by their content:
- ``csv``: ``file,label`` rows (an optional header row), file relative to ``--data`` or a unique base name;
- ``file-label``: ``file label`` per line, whitespace-separated (the common ``val.txt``);
- ``one-per-line``: one label per line, paired with the images in sorted path order (the ImageNet-val
  ground-truth layout, e.g. TensorFlow's ``imagenet_2012_validation_synset_labels.txt`` of wnids).
The devkit's ``ILSVRC2012_validation_ground_truth.txt`` holds 1-based devkit ids in the devkit's own class
order, which only the devkit's ``meta.mat`` maps to wnids: it is refused with a message saying how to convert.
"""

from __future__ import annotations

import csv
import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..typed_numbers import whole_number
from ..weights import sha256_of

_logger = logging.getLogger(__name__)

WNID = re.compile(r"^n\d{8}$")
DEVKIT_GROUND_TRUTH = "ILSVRC2012_validation_ground_truth"
_MAX_LISTED = 5


@dataclass(frozen=True)
class LabelSource:
    """Where the labels came from, for the report and the resume fingerprint."""

    kind: str  # "class-folders" | "labels-file" | "none"
    format: str | None  # "wnid" / "index" folders; "csv" / "file-label" / "one-per-line" files
    path: str | None = None
    sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@functools.lru_cache(maxsize=8)
def _wnid_to_index(subset: str) -> dict[str, int]:
    from timm.data import ImageNetInfo

    return {wnid: index for index, wnid in enumerate(ImageNetInfo(subset).label_names())}


def imagenet_subset(model: torch.nn.Module) -> str | None:
    """timm's guess of the ImageNet subset behind the classifier (by its class count), or None."""
    from timm.data import infer_imagenet_subset

    return infer_imagenet_subset(model)


class LabelParser:
    """Turns one label token into the model's class index, or raises InputError naming where it was read."""

    def __init__(self, num_classes: int, subset: str | None):
        self.num_classes = num_classes
        self.subset = subset

    def parse(self, token: str, where: str) -> int:
        token = token.strip()
        if WNID.match(token):
            if self.subset is None:
                raise InputError(f"{where}: label {token!r} is an ImageNet wnid but the model's {self.num_classes} "
                                 "classes are not a known ImageNet subset; use class indices")
            index = _wnid_to_index(self.subset).get(token)
            if index is None:
                raise InputError(f"{where}: wnid {token!r} is not one of the {self.subset} classes")
            return index
        if (index := whole_number(token)) is not None:
            if index >= self.num_classes:
                raise InputError(f"{where}: class index {index} is out of range (the model has {self.num_classes})")
            return index
        raise InputError(f"{where}: label {token[:40]!r} is neither an ImageNet wnid (n01440764) nor a class index "
                         "(ASCII digits)")

    def looks_like_label(self, token: str) -> bool:
        token = token.strip()
        return bool(WNID.match(token)) or whole_number(token) is not None


def folder_labels(relative_paths: Sequence[str], parser: LabelParser) -> tuple[list[int], LabelSource] | None:
    """Labels from class folders (``DIR/<class>/...``); None when the images are not laid out that way."""
    classes = [p.split("/", 1)[0] if "/" in p else None for p in relative_paths]
    if all(c is None for c in classes):
        _logger.info("images directly inside --data: no class folders, evaluating without labels")
        return None
    names: list[str] = sorted({c for c in classes if c is not None})
    recognised = [n for n in names if parser.looks_like_label(n)]
    if recognised and None in classes:  # one stray image silently turned the labels of the whole dataset off
        stray = [p for p, c in zip(relative_paths, classes, strict=True) if c is None]
        raise InputError(f"--data: {len(stray)} image(s) directly inside --data ({', '.join(stray[:_MAX_LISTED])}) "
                         f"beside class folders ({', '.join(recognised[:3])} ...): move them into their class "
                         "folder or out of --data, or pass --labels none to evaluate without labels")
    if None in classes:
        _logger.warning("images directly inside --data beside folders that are not classes (%s ...): evaluating "
                        "without labels (agreement only)", ", ".join(names[:3]))
        return None
    if not recognised:
        _logger.warning("class folders (%s ...) are neither ImageNet wnids nor class indices: evaluating without "
                        "labels (agreement only); pass --labels FILE to give them", ", ".join(names[:3]))
        return None
    if len(recognised) != len(names):
        odd = [n for n in names if n not in recognised][:_MAX_LISTED]
        raise InputError(f"--data: class folders {odd} are neither ImageNet wnids nor class indices, unlike "
                         f"{recognised[0]!r}; rename them or pass --labels none")
    index = {n: parser.parse(n, f"--data class folder {n!r}") for n in names}
    kind = "wnid" if all(WNID.match(n) for n in names) else "index"
    return [index[c] for c in classes], LabelSource("class-folders", kind)  # type: ignore[index]


def _rows(path: Path) -> tuple[str, list[tuple[int, list[str]]]]:
    """The file's format and its non-empty rows split into fields, each with its line number in the file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start:exc.start + 1]
        raise InputError(f"--labels {path}: not a UTF-8 text file (byte {exc.start} is {bad!r}); a labels file is "
                         "text: one label per line, 'file label' lines or CSV") from None
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise InputError(f"--labels {path}: empty file")
    first = lines[0][1]
    if "," in first:  # one row per line: the lines are split already, so no quoted field spans two
        return "csv", [(n, [field.strip() for field in next(csv.reader([line]))]) for n, line in lines]
    if len(first.split()) >= 2:
        return "file-label", [(n, line.rsplit(maxsplit=1)) for n, line in lines]
    return "one-per-line", [(n, [line]) for n, line in lines]


def file_labels(path: Path, relative_paths: Sequence[str], parser: LabelParser) -> tuple[list[int], LabelSource]:
    """Labels for every image from a labels file; an image without a label is an error naming it."""
    if not path.is_file():
        raise InputError(f"--labels {path}: no such file")
    if DEVKIT_GROUND_TRUTH in path.name:
        raise InputError(
            f"--labels {path}: the devkit's ground truth holds 1-based ILSVRC2012 ids in the devkit's class order, "
            "not timm's; convert it with the devkit's meta.mat to wnids (one per line, like TensorFlow's "
            "imagenet_2012_validation_synset_labels.txt) or arrange the images in wnid folders "
            "(torchvision.datasets.ImageNet(root, split='val') does that)")
    fmt, rows = _rows(path)
    source = LabelSource("labels-file", fmt, str(path), sha256_of(path))
    if fmt == "one-per-line":
        if len(rows) != len(relative_paths):
            raise InputError(f"--labels {path}: {len(rows)} labels (one per line, paired with the images in sorted "
                             f"order) for {len(relative_paths)} images in --data")
        return [parser.parse(row[0], f"--labels {path} line {n}") for n, row in rows], source
    if len(rows[0][1]) >= 2 and not parser.looks_like_label(rows[0][1][-1]):
        rows = rows[1:]  # a header such as "file,label"
    by_name: dict[str, int] = {}
    first_line: dict[str, int] = {}
    for n, row in rows:
        if len(row) < 2 or not row[0]:
            raise InputError(f"--labels {path} line {n}: expected 'file{',' if fmt == 'csv' else ' '}label', got "
                             f"{row}")
        name, label = row[0].replace("\\", "/").removeprefix("./"), parser.parse(row[-1], f"--labels {path} line {n}")
        if name in by_name and by_name[name] != label:  # the last one used to win, silently
            raise InputError(f"--labels {path} line {n}: {name!r} labelled {label} here and {by_name[name]} on line "
                             f"{first_line[name]}")
        by_name[name] = label
        first_line.setdefault(name, n)
    return _match(by_name, relative_paths, path), source


def _match(by_name: dict[str, int], relative_paths: Sequence[str], path: Path) -> list[int]:
    """Look each image up by its path relative to --data, else by its base name when that is unique."""
    base_counts: dict[str, int] = {}
    for rel in relative_paths:
        base = rel.rsplit("/", 1)[-1]
        base_counts[base] = base_counts.get(base, 0) + 1
    labels, missing = [], []
    for rel in relative_paths:
        base = rel.rsplit("/", 1)[-1]
        label = by_name.get(rel)
        if label is None and base_counts[base] == 1:
            label = by_name.get(base)
        if label is None:
            missing.append(rel)
        labels.append(label)
    if missing:
        ambiguous = sorted({base for rel in missing if (base := rel.rsplit("/", 1)[-1]) in by_name
                            and base_counts[base] > 1})
        why = (f" (the labels file names {ambiguous[:_MAX_LISTED]} by base name only, and --data holds several "
               "files of each name: give their paths relative to --data)" if ambiguous else "")
        raise InputError(f"--labels {path}: no label for {len(missing)} image(s) in --data, e.g. "
                         f"{missing[:_MAX_LISTED]}{why}; pass --labels none to evaluate agreement only")
    unused = len(by_name) - len(relative_paths)
    if unused > 0:
        _logger.info("--labels %s: %d labelled files are not in --data (evaluating a subset)", path, unused)
    return labels  # type: ignore[return-value]


def resolve_labels(spec: str, relative_paths: Sequence[str], model: torch.nn.Module,
                   num_classes: int) -> tuple[list[int | None], LabelSource]:
    """``--labels auto|none|PATH`` -> one label (or None) per image and where they came from."""
    if spec == "none" or num_classes == 0:
        return [None] * len(relative_paths), LabelSource("none", None)
    parser = LabelParser(num_classes, imagenet_subset(model))
    found = folder_labels(relative_paths, parser) if spec == "auto" else file_labels(Path(spec), relative_paths, parser)
    if found is None:
        return [None] * len(relative_paths), LabelSource("none", None)
    labels, source = found
    return list(labels), source


def class_namer(model: torch.nn.Module):
    """index -> human class name (ImageNet descriptions shipped with timm), or the index as text."""
    subset = imagenet_subset(model)
    if subset is None:
        return str
    from timm.data import ImageNetInfo

    info = ImageNetInfo(subset)
    return lambda index: info.index_to_description(int(index))
