"""The one training loop every classifier shares (the nets live in
:mod:`pipeline.classifiers.nets`).

:func:`train_classifier`: Adam, class-weighted cross-entropy, gradient clipping, early stopping on
validation loss with the best weights restored, a checkpoint every epoch that ``resume`` continues
from bit-for-bit, and on CUDA mixed precision plus a batch size fitted to the GPU
(:mod:`pipeline.device`). Batches are gathered on the device
(:class:`pipeline.classifiers.windows.WindowData`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.classifiers.metrics import N_CLASSES, class_weights, metrics_from_confusion
from pipeline.classifiers.train_checkpoint import TrainLoop, cpu_state, save_checkpoint
from pipeline.common import (
    ProgressLog,
    TrainingInterrupted,
    progress_bars_wanted,
)
from pipeline.config.schema import TrainingConfig

if TYPE_CHECKING:
    # torch is imported where it is used: `python pytorch_train.py` answers at once that this
    # is a library module, instead of importing torch for seconds and printing nothing.
    import numpy as np
    import torch
    from torch import nn

    from pipeline.classifiers.windows import WindowData

log = logging.getLogger(__name__)


def interrupt_message(
    what: str,
    epoch: int | None,
    epochs: int,
    checkpoint_path: Path | None,
    last_saved: int,
    completed: int | None = None,
) -> str:
    """What is true after an interrupt: which epoch stopped and which checkpoint (if any) exists.

    A SIGTERM in the first epoch used to end in "checkpoint written" although none existed.
    ``completed`` is the last epoch that finished (default: ``last_saved``).
    """
    completed = last_saved if completed is None else completed
    if epoch is None:
        where = ""
    elif completed >= epoch:  # stopped between epochs, after this one finished
        where = f" after epoch {epoch}/{epochs}"
    else:
        where = f" in epoch {epoch}/{epochs}"
    head = f"{what or 'training'} interrupted{where}"
    if last_saved > 0 and checkpoint_path is not None:
        return f"{head}; checkpoint of epoch {last_saved} kept at {checkpoint_path}"
    if checkpoint_path is None:
        return f"{head}; no checkpoint was written (checkpoints are off for this training)"
    return (
        f"{head}, before its first epoch finished; no checkpoint was written, so a rerun "
        "starts it again from epoch 1"
    )


@dataclass
class TrainResult:
    """What :func:`train_classifier` returns; ``model`` holds the best (lowest val loss) weights."""

    model: nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    epochs_run: int
    best_val_loss: float
    train_seconds: float
    device: str
    batch_size: int
    amp: str
    resumed_from_epoch: int = 0
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when absent or unreadable (logged)."""
    import torch

    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt file must not stop a fresh start
        log.warning("checkpoint %s unreadable (%s); starting fresh", path, exc)
        return None


def _evaluate(
    model: nn.Module,
    data: WindowData,
    loss_fn: nn.Module,
    batch_size: int,
    dtype: torch.dtype | None,
) -> tuple[float, np.ndarray]:
    """Mean loss and confusion matrix over ``data`` (eval mode, no grad)."""
    import torch

    model.eval()
    n = len(data)
    device = data.features.device
    loss_sum = torch.zeros((), device=device)
    confusion = torch.zeros(N_CLASSES * N_CLASSES, dtype=torch.int64, device=device)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            idx = torch.arange(start, min(start + batch_size, n), device=device)
            x, y = data.batch(idx)  # (B, L, F), (B,)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(x)
            loss_sum += loss_fn(logits.float(), y) * len(idx)
            confusion += torch.bincount(y * N_CLASSES + logits.argmax(1), minlength=N_CLASSES**2)
    return float(loss_sum) / max(n, 1), confusion.cpu().numpy().reshape(N_CLASSES, N_CLASSES)


class _EpochProgress:
    """A tqdm bar over epochs (terminal), or a :class:`ProgressLog` line with ETA (no terminal).

    Under ``runpod_main.py`` the output is a pipe and a bar is invisible, so without a terminal a
    line "``desc`` epoch e/E: done/total batches (pct), elapsed, ETA" is logged at most every
    ``interval_s`` seconds, also in the middle of a long epoch. The ETA assumes every epoch runs;
    early stopping may end sooner.
    """

    def __init__(
        self, desc: str, epochs: int, start_epoch: int, bar: bool, interval_s: float
    ) -> None:
        self.desc, self.epochs = desc or "training", epochs
        self.bar: Any = None
        self.plog: ProgressLog | None = None
        self.n_batches = 1
        if bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=epochs, desc=desc, unit="epoch", initial=start_epoch - 1, leave=True
            )
        else:
            self.plog = ProgressLog(self.desc, 1, "batches", interval_s=interval_s, logger=log)

    def start(self, epoch: int, n_batches: int) -> None:
        """Called before each epoch with its number of batches (changes after an OOM retry)."""
        self.n_batches = max(1, n_batches)
        self.batch(epoch, 0)

    def batch(self, epoch: int, done_in_epoch: int) -> None:
        """``done_in_epoch`` batches of ``epoch`` are done."""
        if self.plog is None:
            return
        self.plog.desc = f"{self.desc} epoch {epoch}/{self.epochs}"
        self.plog.total = self.epochs * self.n_batches
        self.plog.update((epoch - 1) * self.n_batches + done_in_epoch)

    def epoch_done(self, **postfix: str) -> None:
        """One epoch finished (advances the bar)."""
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(**postfix)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _setup(model: nn.Module, train: WindowData, cfg: TrainingConfig, fingerprint: str) -> TrainLoop:
    """Device, AMP dtype, batch size (fitted to the GPU), Adam, class-weighted loss, seeded
    data order."""
    import torch
    from torch import nn

    from pipeline.device import amp_dtype, configure_cuda, cuda_free_bytes, scale_batch_size

    device = train.features.device
    dtype = amp_dtype(device, cfg.amp)
    if device.type == "cuda":
        configure_cuda()
    batch_size = scale_batch_size(
        cfg.batch_size, cuda_free_bytes(device), len(train), min_steps=cfg.min_steps_per_epoch
    )
    # A batch grown k-fold takes sqrt(k) x the step (Adam's square-root scaling rule, Malladi
    # et al. 2022), so fewer, larger steps cover the same distance. A batch cut for
    # min_steps_per_epoch keeps the configured rate: Adam's 1e-3 is the usual small-batch rate,
    # and on the classifier ladder the demo's networks gained with it at the cut batch (102).
    lr = cfg.learning_rate * math.sqrt(max(batch_size / max(cfg.batch_size, 1), 1.0))
    model.to(device)
    weights = torch.as_tensor(class_weights(train.labels.cpu().numpy()), dtype=torch.float32)
    return TrainLoop(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg.weight_decay),
        # fp16 needs loss scaling against gradient underflow; bf16 has fp32's exponent range.
        scaler=torch.amp.GradScaler("cuda", enabled=dtype == torch.float16),
        loss_fn=nn.CrossEntropyLoss(weight=weights.to(device)),
        gen=torch.Generator().manual_seed(cfg.seed),
        dtype=dtype,
        batch_size=batch_size,
        fingerprint=fingerprint,
        best_state=cpu_state(model.state_dict()),
        base_lr=lr,
    )


def _resume(loop: TrainLoop, checkpoint_path: Path, desc: str) -> None:
    """Load the run's checkpoint when there is one of this run (same fingerprint)."""
    ckpt = load_checkpoint(checkpoint_path)
    if ckpt is not None and ckpt.get("fingerprint") != loop.fingerprint:
        log.warning(
            "checkpoint %s belongs to another run (config or data changed); starting fresh",
            checkpoint_path,
        )
        ckpt = None
    if ckpt is None:
        log.info("%s: nothing to resume; training from scratch", desc)
        return
    loop.resume_from(ckpt)
    log.info("%s: resuming after epoch %d from %s", desc, loop.start_epoch - 1, checkpoint_path)


WARMUP_EPOCHS = 3
"""``lr_schedule = warmup_cosine``: epochs of linear warm-up (from 1/3 of the rate)."""


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """The learning rate of ``epoch`` (1-based) as a multiple of the base rate.

    ``warmup_cosine``: ``epoch / 3`` for the first 3 epochs (Goyal et al. 2017's warm-up), then
    a cosine from 1 down to 0.1 at ``epochs`` (Loshchilov & Hutter 2017, without restarts). A
    function of the epoch alone, so a resumed run sets the same rate without scheduler state.
    """
    if schedule != "warmup_cosine":
        return 1.0
    if epoch <= WARMUP_EPOCHS:
        return epoch / WARMUP_EPOCHS
    span = max(epochs - WARMUP_EPOCHS, 1)
    progress = min((epoch - WARMUP_EPOCHS) / span, 1.0)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _train_epoch(
    loop: TrainLoop,
    train: WindowData,
    cfg: TrainingConfig,
    batch_size: int,
    epoch: int,
    progress: _EpochProgress,
) -> tuple[float, float]:
    """One pass over ``train`` in a seeded random order: (mean loss, accuracy)."""
    import torch
    from torch import nn

    model, device = loop.model, train.features.device
    for group in loop.optimizer.param_groups:
        group["lr"] = loop.base_lr * lr_factor(cfg.lr_schedule, epoch, cfg.epochs)
    model.train()
    n = len(train)
    progress.start(epoch, -(-n // batch_size))
    perm = torch.randperm(n, generator=loop.gen).to(device)  # (n,)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for i, start in enumerate(range(0, n, batch_size)):
        idx = perm[start : start + batch_size]
        x, y = train.batch(idx)  # (B, L, F), (B,)
        with torch.autocast(device.type, dtype=loop.dtype, enabled=loop.dtype is not None):
            logits = model(x)  # (B, 3)
        loss = loop.loss_fn(logits.float(), y)
        loop.optimizer.zero_grad(set_to_none=True)
        loop.scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            loop.scaler.unscale_(loop.optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
        # Accumulate on the device: no host sync per batch.
        loss_sum += loss.detach() * len(idx)
        correct += (logits.detach().argmax(1) == y).sum()
        progress.batch(epoch, i + 1)
    return float(loss_sum) / n, float(correct) / n


def _record_epoch(
    loop: TrainLoop,
    epoch: int,
    train_loss: float,
    train_acc: float,
    val_loss: float,
    confusion: Any,
    epoch_start: float,
) -> dict[str, float]:
    """Early-stopping bookkeeping (best weights on the lowest validation loss) and the history
    row of ``epoch``."""
    val_metrics = metrics_from_confusion(confusion)
    if val_loss < loop.best_val:
        loop.best_val, loop.best_epoch, loop.bad_epochs = val_loss, epoch, 0
        loop.best_state = cpu_state(loop.model.state_dict())
    else:
        loop.bad_epochs += 1
    record = {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_accuracy": train_acc,
        "val_loss": val_loss,
        "val_accuracy": val_metrics["accuracy"],
        "val_macro_f1": val_metrics["macro_f1"],
        "lr": float(loop.optimizer.param_groups[0]["lr"]),
        "epoch_seconds": time.perf_counter() - epoch_start,
        "batch_size": loop.batch_size,
    }
    loop.history.append(record)
    return record


def train_classifier(
    model: nn.Module,
    train: WindowData,
    val: WindowData,
    cfg: TrainingConfig,
    checkpoint_path: Path | None = None,
    resume: bool = False,
    fingerprint: str = "",
    epoch_callback: Callable[[int, dict[str, float]], None] | None = None,
    desc: str = "",
    progress: bool | None = None,
    progress_interval_s: float = 30.0,
) -> TrainResult:
    """Train ``model`` on ``train``, early-stop on ``val`` loss, restore the best weights.

    Args:
        model: a freshly built classifier (seed torch before building it for reproducibility).
        train, val: samples on the target device (see :class:`WindowData`).
        cfg: learning rate, weight decay, grad clip, epochs, patience, batch size, AMP, seed.
        checkpoint_path: where the per-epoch checkpoint is written (None = no checkpoints).
        resume: continue from ``checkpoint_path`` when it exists and its ``fingerprint`` matches;
            the result then equals an uninterrupted run with the same seed.
        fingerprint: identifies the run (config hash, dataset hash, fold) inside the checkpoint.
        epoch_callback: ``fn(epoch, record)`` after each epoch's checkpoint is written (tests use
            it to simulate an interruption).
        desc: progress label. progress: True forces the bar, False the log lines, None = a bar
            when :func:`pipeline.common.progress_bars_wanted` says so, else log lines.
        progress_interval_s: at most one progress log line per this many seconds (no bar).

    Raises:
        TrainingInterrupted: on Ctrl-C / SIGTERM; the last written checkpoint is kept.
    """
    # 1. setup (and resume)
    loop = _setup(model, train, cfg, fingerprint)
    if resume and checkpoint_path is not None:
        _resume(loop, checkpoint_path, desc)
    loop.t0 = time.perf_counter()
    want_bar = progress_bars_wanted() if progress is None else progress
    progress_out = _EpochProgress(desc, cfg.epochs, loop.start_epoch, want_bar, progress_interval_s)
    try:
        stopped_early = _run_epochs(
            loop, train, val, cfg, checkpoint_path, epoch_callback, desc, progress_out
        )
    finally:
        progress_out.close()
    return _best_result(loop, train, stopped_early)


def _best_result(loop: TrainLoop, train: WindowData, stopped_early: bool) -> TrainResult:
    """The :class:`TrainResult` of the run, its model holding the best epoch's weights."""
    # 5. the best epoch's weights
    model = loop.model
    model.load_state_dict(loop.best_state)
    dtype = loop.dtype
    return TrainResult(
        model=model,
        history=loop.history,
        best_epoch=loop.best_epoch,
        epochs_run=len(loop.history),
        best_val_loss=loop.best_val,
        train_seconds=loop.elapsed(),
        device=str(train.features.device),
        batch_size=loop.batch_size,
        amp="off" if dtype is None else str(dtype).replace("torch.", ""),
        resumed_from_epoch=loop.start_epoch - 1,
        stopped_early=stopped_early,
    )


def _run_epochs(
    loop: TrainLoop,
    train: WindowData,
    val: WindowData,
    cfg: TrainingConfig,
    checkpoint_path: Path | None,
    epoch_callback: Callable[[int, dict[str, float]], None] | None,
    desc: str,
    progress_out: _EpochProgress,
) -> bool:
    """The epochs from ``loop.start_epoch`` until the last or early stopping, each checkpointed;
    whether training stopped early. Ctrl-C / SIGTERM becomes :class:`TrainingInterrupted`."""
    last_saved = completed = loop.start_epoch - 1
    epoch = loop.start_epoch
    stopped_early = loop.bad_epochs >= cfg.patience
    epoch_start_state = loop.snapshot(epoch - 1) if epoch <= cfg.epochs else None
    try:
        for epoch in range(loop.start_epoch, cfg.epochs + 1):
            if stopped_early:
                break
            assert epoch_start_state is not None
            record = _fit_epoch(loop, train, val, cfg, epoch, epoch_start_state, progress_out)
            completed = epoch
            stopped_early = loop.bad_epochs >= cfg.patience
            # 4. checkpoint
            epoch_start_state = loop.snapshot(epoch)
            if checkpoint_path is not None:
                save_checkpoint(checkpoint_path, epoch_start_state)
                last_saved = epoch
            _report_epoch(progress_out, desc, epoch, record)
            if epoch_callback is not None:
                epoch_callback(epoch, record)
    except KeyboardInterrupt:
        # Say what is true: a checkpoint exists only once an epoch finished (or was resumed).
        raise TrainingInterrupted(
            interrupt_message(desc, epoch, cfg.epochs, checkpoint_path, last_saved, completed),
            checkpoint_path if last_saved > 0 else None,
            last_saved,
            epoch=epoch,
            what=desc,
        ) from None
    return stopped_early


def _fit_epoch(
    loop: TrainLoop,
    train: WindowData,
    val: WindowData,
    cfg: TrainingConfig,
    epoch: int,
    start_state: dict[str, Any],
    progress_out: _EpochProgress,
) -> dict[str, float]:
    """Train ``epoch``, validate, keep the best weights: the epoch's history row."""
    from pipeline.device import call_with_oom_retry

    epoch_start = time.perf_counter()
    # 2. train one epoch (an out-of-memory rolls back to the epoch's start, halves the
    #    batch and retries)
    (train_loss, train_acc), loop.batch_size = call_with_oom_retry(
        lambda bs, e=epoch: _train_epoch(loop, train, cfg, bs, e, progress_out),
        loop.batch_size,
        on_oom=lambda _bs, s=start_state: loop.restore(s),
    )
    # 3. validate, keep the best weights, record the epoch
    val_loss, confusion = _evaluate(
        loop.model, val, loop.loss_fn, max(loop.batch_size, 1024), loop.dtype
    )
    return _record_epoch(loop, epoch, train_loss, train_acc, val_loss, confusion, epoch_start)


def _report_epoch(
    progress_out: _EpochProgress, desc: str, epoch: int, record: dict[str, float]
) -> None:
    """The bar's postfix (or nothing, with log lines) and a debug line of the finished epoch."""
    progress_out.epoch_done(
        loss=f"{record['train_loss']:.4f}",
        val_loss=f"{record['val_loss']:.4f}",
        val_f1=f"{record['val_macro_f1']:.3f}",
    )
    log.debug(
        "%s epoch %d: train %.4f val %.4f f1 %.3f (%.1fs)",
        desc,
        epoch,
        record["train_loss"],
        record["val_loss"],
        record["val_macro_f1"],
        record["epoch_seconds"],
    )


if __name__ == "__main__":
    # A library module beside the scripts: say what it is, in one line.
    import sys

    print(
        "pytorch_train.py is a library module (the classifier training loop), not a command: "
        "train the classifiers with `python train_models.py --dataset NAME` (see its --help) "
        "or run the whole pipeline with `python runpod_main.py --dataset NAME`",
        file=sys.stderr,
    )
    raise SystemExit(0 if sys.argv[1:] in (["--help"], ["-h"]) else 1)
