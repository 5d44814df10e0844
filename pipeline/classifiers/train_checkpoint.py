"""The checkpoint of the classifier training loop (``pytorch_train.train_classifier``): the state
of one run (:class:`TrainLoop`), its snapshot after an epoch, the rollback an out-of-memory retry
needs, and the atomic write. torch is imported where it is used, as in the loop itself."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.common import atomic_path

if TYPE_CHECKING:
    import torch
    from torch import nn

CHECKPOINT_VERSION = 1


def cpu_state(state: dict[str, Any]) -> dict[str, Any]:
    """Deep copy of a (nested) state dict with every tensor cloned to the CPU."""
    import torch

    if isinstance(state, dict):
        return {k: cpu_state(v) for k, v in state.items()}
    if isinstance(state, list):
        return [cpu_state(v) for v in state]
    if isinstance(state, tuple):
        return tuple(cpu_state(v) for v in state)
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    return copy.deepcopy(state)


def _rng_state(gen: torch.Generator) -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state(), "perm": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    gen.set_state(state["perm"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temp file beside ``path``, then rename: never a half-written file."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


@dataclass
class TrainLoop:
    """The mutable state of one training run: what a checkpoint holds, plus the fixed parts
    (model, optimizer, loss, data order generator) the phases of ``pytorch_train.train_classifier``
    share."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    gen: torch.Generator
    dtype: torch.dtype | None
    batch_size: int
    fingerprint: str
    history: list[dict[str, float]] = field(default_factory=list)
    best_val: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, Any] = field(default_factory=dict)
    bad_epochs: int = 0
    start_epoch: int = 1
    elapsed_before: float = 0.0
    t0: float = field(default_factory=time.perf_counter)
    base_lr: float = 0.0  # the learning rate the schedule scales (after batch scaling)

    def snapshot(self, epoch: int) -> dict[str, Any]:
        """The checkpoint after ``epoch`` (everything on the CPU)."""
        return {
            "version": CHECKPOINT_VERSION,
            "fingerprint": self.fingerprint,
            "epoch": epoch,
            "model": cpu_state(self.model.state_dict()),
            "optimizer": cpu_state(self.optimizer.state_dict()),
            "grad_scaler": self.scaler.state_dict(),
            "rng": _rng_state(self.gen),
            "history": self.history,
            "best_val_loss": self.best_val,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "bad_epochs": self.bad_epochs,
            "batch_size": self.batch_size,
            "train_seconds": self.elapsed(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Weights, optimizer, grad scaler and data order of ``state`` (an OOM retry's rollback)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["grad_scaler"])
        _set_rng_state(state["rng"], self.gen)

    def resume_from(self, ckpt: dict[str, Any]) -> None:
        """Continue after the checkpoint's epoch, bit for bit as if never interrupted."""
        self.restore(ckpt)
        self.history = list(ckpt["history"])
        self.best_val, self.best_epoch = float(ckpt["best_val_loss"]), int(ckpt["best_epoch"])
        self.best_state = ckpt["best_state"]
        self.bad_epochs = int(ckpt["bad_epochs"])
        self.batch_size = int(ckpt["batch_size"])
        self.start_epoch = int(ckpt["epoch"]) + 1
        self.elapsed_before = float(ckpt["train_seconds"])

    def elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self.t0)
