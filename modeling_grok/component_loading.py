"""Real component weights for GROK: RETFound / RetiZero / timm ViT checkpoints and any causal LM.

RETFound ships `.pth` files holding a `model` state dict (MAE) or a `teacher` one (DINOv2, keys under
`backbone.`, SwiGLU-style `mlp.w12` / `mlp.w3` names). RetiZero's ViT-L/16 carries LoRA-ViT adapters on the
query and value parts of `attn.qkv` (r 8, no scaling), which are merged here into plain timm weights.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import torch
from timm.layers import resample_abs_pos_embed

CheckpointFormat = Literal["auto", "retfound", "retizero", "timm"]
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_LORA_KEY = re.compile(r"^(?P<block>.*\.attn\.qkv)\.(?P<part>linear_[ab]_[qv])\.weight$")


def resolve_checkpoint_file(name_or_path: str | os.PathLike, filename: str | None = None) -> Path:
    """A checkpoint file from a file path, a folder holding one, or a Hub repo id (cache only when offline)."""
    path = Path(name_or_path)
    if not path.exists():
        from huggingface_hub import snapshot_download

        patterns = [filename] if filename else [f"*{suffix}" for suffix in CHECKPOINT_SUFFIXES]
        path = Path(snapshot_download(str(name_or_path), allow_patterns=patterns))
    if path.is_file():
        return path
    candidates = [path / filename] if filename else sorted(p for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES)
    candidates = [p for p in candidates if p.is_file()]
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise FileNotFoundError(
            f"Expected exactly one checkpoint ({'/'.join(CHECKPOINT_SUFFIXES)}) in {path}, found: {found}; "
            "pass the file's path or filename=..."
        )
    return candidates[0]


def read_state_dict(file: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` or torch file, loaded with ``weights_only=True`` (no pickled code runs)."""
    file = Path(file)
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{file} holds a {type(checkpoint).__name__}, not a state dict.")
    return checkpoint


def _unwrap(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The encoder's tensors: RETFound's `model` (MAE) / `teacher` (DINOv2) / `state_dict`, prefixes removed."""
    for key in ("model", "teacher", "state_dict", "module"):
        if key in checkpoint and isinstance(checkpoint[key], dict):
            checkpoint = checkpoint[key]
            break
    anchors = [k for k in checkpoint if k.endswith("patch_embed.proj.weight")]
    if not anchors:
        raise ValueError("The checkpoint has no 'patch_embed.proj.weight': it is not a ViT encoder.")
    prefix = min(anchors, key=len)[: -len("patch_embed.proj.weight")]
    return {k[len(prefix) :]: v for k, v in checkpoint.items() if k.startswith(prefix) and torch.is_tensor(v)}


def merge_lora_vit(state_dict: dict[str, torch.Tensor], scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Fold LoRA-ViT adapters (`attn.qkv.qkv` + `linear_{a,b}_{q,v}`) into plain `attn.qkv` weights."""
    adapters: dict[str, dict[str, torch.Tensor]] = {}
    merged: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        match = _LORA_KEY.match(key)
        if match:
            adapters.setdefault(match["block"], {})[match["part"]] = value
        else:
            merged[key.replace(".attn.qkv.qkv.", ".attn.qkv.")] = value
    for block, parts in adapters.items():
        weight = merged[f"{block}.weight"].clone()
        dim = weight.shape[1]
        if {"linear_a_q", "linear_b_q"} <= parts.keys():
            weight[:dim] += scale * parts["linear_b_q"].float() @ parts["linear_a_q"].float()
        if {"linear_a_v", "linear_b_v"} <= parts.keys():
            weight[-dim:] += scale * parts["linear_b_v"].float() @ parts["linear_a_v"].float()
        merged[f"{block}.weight"] = weight
    return merged


def _detect_format(state_dict: dict[str, torch.Tensor]) -> str:
    if any(_LORA_KEY.match(k) for k in state_dict):
        return "retizero"
    return "retfound"


def load_vision_tower_state_dict(
    name_or_path: str | os.PathLike,
    vit: torch.nn.Module,
    checkpoint_format: CheckpointFormat = "auto",
    filename: str | None = None,
    lora_scale: float = 1.0,
) -> dict[str, list[str]]:
    """Load a RETFound / RetiZero / timm checkpoint into the timm ``vit``, resampling position embeddings.

    Returns the ``missing`` and ``unexpected`` keys (heads, MAE decoders and DINO mask tokens are expected to
    be unexpected); raises when any encoder weight is missing.
    """
    state_dict = _unwrap(read_state_dict(resolve_checkpoint_file(name_or_path, filename)))
    checkpoint_format = _detect_format(state_dict) if checkpoint_format == "auto" else checkpoint_format
    if checkpoint_format == "retizero":
        state_dict = merge_lora_vit(state_dict, scale=lora_scale)
    state_dict = {k.replace("mlp.w12.", "mlp.fc1.").replace("mlp.w3.", "mlp.fc2."): v for k, v in state_dict.items()}
    if "pos_embed" in state_dict and state_dict["pos_embed"].shape != vit.pos_embed.shape:
        grid = vit.patch_embed.grid_size
        prefix = 0 if getattr(vit, "no_embed_class", False) else vit.num_prefix_tokens
        state_dict["pos_embed"] = resample_abs_pos_embed(state_dict["pos_embed"], new_size=grid, num_prefix_tokens=prefix)
    own = vit.state_dict()
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(("head.", "fc_norm.")) or k in own}
    mismatched = [k for k, v in state_dict.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        raise ValueError(
            f"Shape mismatch for {mismatched[:3]}: the tower config (embed_dim, patch_size, depth) does not match "
            f"{name_or_path}."
        )
    result = vit.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(("head.", "fc_norm."))]
    if missing:
        raise ValueError(
            f"The {checkpoint_format} checkpoint {name_or_path} lacks {len(missing)} encoder weights of the configured "
            f"tower (first: {missing[:3]}); check the tower config (architecture, embed_dim, depth) matches it."
        )
    return {"missing": list(result.missing_keys), "unexpected": sorted(k for k in state_dict if k not in own)}
