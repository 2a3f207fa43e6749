"""Build checkpoints in every real format and layout from a seeded timm model (no downloads)."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

MODEL = "convnextv2_atto.fcmae_ft_in1k"
HUB_ID = "timm/convnextv2_atto.fcmae_ft_in1k"
SEED = 1234  # differs from accelport's random-init seed (0), so a loaded checkpoint is distinguishable


def seeded_state_dict(seed: int = SEED) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = timm.create_model(MODEL, pretrained=False)
    # timm inits GRN to zero and biases to zero: randomise everything so a wrong mapping cannot go unnoticed
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "grn" in name or name.endswith("bias"):
                param.normal_(0.0, 0.05)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def to_original_release(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm names -> the ConvNeXt-V2 release's (downsample_layers, stages.i.j, dwconv, pwconv, grn, norm, head)."""
    out = {}
    for key, value in state.items():
        k = key.replace("stem.", "downsample_layers.0.")
        k = re.sub(r"stages\.(\d+)\.downsample\.(\d+)", r"downsample_layers.\1.\2", k)
        k = re.sub(r"stages\.(\d+)\.blocks\.(\d+)", r"stages.\1.\2", k)
        k = k.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
        if k.endswith(("pwconv1.weight", "pwconv2.weight")):
            value = value.reshape(value.shape[0], -1)  # the release's pwconv is nn.Linear; timm's atto uses 1x1 convs
        if "mlp.grn" in k:
            k = k.replace("mlp.grn.weight", "grn.gamma").replace("mlp.grn.bias", "grn.beta")
            value = value.reshape(1, 1, 1, -1)
        k = k.replace("head.norm.", "norm.").replace("head.fc.", "head.")
        out[k] = value.clone()
    return out


def write_hf_cache(hf_home: Path, state: dict[str, torch.Tensor], repo_id: str = HUB_ID) -> Path:
    """The real hub cache layout: blobs/<sha256>, snapshots/<rev>/model.safetensors -> blob, refs/main."""
    repo_dir = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    tmp = repo_dir / "tmp.safetensors"
    repo_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(tmp))
    blob_id = hashlib.sha256(tmp.read_bytes()).hexdigest()
    blob = repo_dir / "blobs" / blob_id
    blob.parent.mkdir(exist_ok=True)
    os.replace(tmp, blob)
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(os.path.relpath(blob, snapshot))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    return snapshot / "model.safetensors"


def write_all_formats(folder: Path, state: dict[str, torch.Tensor]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "safetensors": folder / "model.safetensors",
        "pth": folder / "pytorch_model.pth",
        "bin": folder / "pytorch_model.bin",
        "original": folder / "convnextv2_atto_1k_224_ema.pt",
    }
    save_file(state, str(paths["safetensors"]))
    torch.save(state, paths["pth"])
    torch.save({"state_dict": state}, paths["bin"])
    torch.save({"model": to_original_release(state)}, paths["original"])
    return paths
