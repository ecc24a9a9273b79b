"""Reference models with trained weights: trained once on their builtin data set (seeded, so every machine
gets the same model) and cached as safetensors, which load without unpickling anything."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from rich.progress import Progress
from torch import nn

from ..cache import cache_dir
from ..datasets import load_dataset
from ..fileio import atomic_write_bytes
from ..training import evaluate_accuracy, fit
from .registry import ModelInfo, build_model, model_info


def pretrained(name: str, *, progress: Progress | None = None) -> nn.Module:
    """The reference model ``name`` with trained weights, in eval mode: loaded from the cache, or trained
    with its ModelInfo settings (and then cached) when the cache has no valid copy."""
    info = model_info(name)
    model = _fresh(info)
    path = weights_path(name, model)
    if _load(model, path):
        return model.eval()
    model = _fresh(info)  # a failed load may have filled some tensors already
    dataset = load_dataset(info.dataset)
    fit(model, dataset, epochs=info.epochs, lr=info.lr, batch_size=info.batch_size, weight_decay=info.weight_decay,
        seed=info.seed, schedule=info.schedule, progress=progress, description=f"train {name}")
    accuracy = evaluate_accuracy(model, dataset.x_test, dataset.y_test)
    metadata = {"test_accuracy": f"{accuracy:.6f}", "dataset": info.dataset, "epochs": str(info.epochs),
                "model": name}
    from safetensors.torch import save

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata=metadata))
    return model.eval()


def pretrained_accuracy(name: str) -> float | None:
    """Test accuracy recorded when the cached weights of ``name`` were trained; None when not cached."""
    from safetensors import SafetensorError, safe_open

    path = weights_path(name, build_model(name))
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return float(metadata["test_accuracy"])
    except (SafetensorError, OSError, ValueError, KeyError):
        return None


def weights_path(name: str, model: nn.Module) -> Path:
    """``cache_dir("models")/<name>-<hash>.safetensors``; the hash covers the training settings and the
    parameter shapes, so changing either trains afresh instead of loading stale weights."""
    info = model_info(name)
    key = {"settings": info.training_settings(),
           "shapes": [[k, list(v.shape)] for k, v in model.state_dict().items()]}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir("models") / f"{name}-{digest}.safetensors"


def _fresh(info: ModelInfo) -> nn.Module:
    # Seeded initialisation makes training repeatable; fork_rng leaves the caller's generator untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(info.seed)
        return info.factory()


def _load(model: nn.Module, path: Path) -> bool:
    """Load cached weights into ``model``; False when missing or damaged (the caller retrains: the cache only
    saves time, so a bad file must never stop a run)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        return False
    try:
        state = load_file(str(path))
        model.load_state_dict(state, strict=True)
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return False
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
