"""A small labelled dataset built from the sample photographs, with labels known by construction.

The reference's predictions are computed here with plain timm (not with accelport's eval code), then each
image gets a label chosen to be right or wrong on purpose, so the expected accuracy is known in advance.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from PIL import Image
from timm.data import ImageNetInfo

from accelport.preprocess import DEFAULT_SAMPLES_DIR

SAMPLES = DEFAULT_SAMPLES_DIR  # accelport/samples, installed with the package
MODEL = "convnextv2_atto.fcmae_ft_in1k"

# name in the dataset -> sample file; 7 images (an odd count), chelsea twice
IMAGES = {
    "astronaut.jpg": "astronaut.jpg",
    "camera.png": "camera.png",
    "chelsea.jpg": "chelsea.jpg",
    "chelsea_copy.jpg": "chelsea.jpg",
    "coffee.jpg": "coffee.jpg",
    "horse.png": "horse.png",
    "rocket.jpg": "rocket.jpg",
}
# How each label is built from the reference's own ranking of the classes.
TOP1_LABEL = ("astronaut.jpg", "camera.png", "chelsea.jpg", "chelsea_copy.jpg")  # right at top-1 (and top-5)
THIRD_LABEL = ("coffee.jpg",)  # the reference's 3rd class: wrong at top-1, right at top-5
LAST_LABEL = ("horse.png", "rocket.jpg")  # the reference's least likely class: wrong at both
EXPECTED_TOP1_CORRECT = len(TOP1_LABEL)  # 4 of 7
EXPECTED_TOP5_CORRECT = len(TOP1_LABEL) + len(THIRD_LABEL)  # 5 of 7


def reference_rankings(state: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    """Every class index of each image, most likely first, from plain timm on CPU fp32."""
    model = timm.create_model(MODEL, pretrained=False)
    model.load_state_dict(state)
    model.eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    rankings = {}
    with torch.no_grad():
        for name, sample in IMAGES.items():
            logits = model(transform(Image.open(SAMPLES / sample).convert("RGB")).unsqueeze(0))[0]
            rankings[name] = torch.argsort(logits, descending=True).tolist()
    return rankings


def constructed_labels(rankings: dict[str, list[int]]) -> dict[str, int]:
    labels = {}
    for name, ranking in rankings.items():
        labels[name] = ranking[0] if name in TOP1_LABEL else ranking[2] if name in THIRD_LABEL else ranking[-1]
    return labels


def wnid(index: int) -> str:
    return ImageNetInfo("imagenet-1k").label_names()[index]


@dataclass(frozen=True)
class Datasets:
    class_folders: Path  # DIR/<wnid>/<image>
    flat: Path  # DIR/<image>, labels in the files below
    labels_csv: Path
    labels: dict[str, int]


def build_datasets(root: Path, labels: dict[str, int]) -> Datasets:
    folders, flat = root / "class_folders", root / "flat"
    flat.mkdir(parents=True)
    for name, sample in IMAGES.items():
        class_dir = folders / wnid(labels[name])
        class_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / sample, class_dir / name)
        shutil.copy(SAMPLES / sample, flat / name)
    csv = root / "labels.csv"
    csv.write_text("file,label\n" + "".join(f"{name},{labels[name]}\n" for name in IMAGES))
    return Datasets(folders, flat, csv, labels)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
