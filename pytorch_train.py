"""Classifier models (LSTM, GRU, BiLSTM, DLSTM) and the one training loop they all share.

Every model maps a window of scaled features ``(batch, lookback, features)`` to three logits for
Fall / Stationary / Rise. The loop (:func:`train_classifier`) is the same for all four: Adam,
class-weighted cross-entropy, gradient clipping, early stopping on validation loss with the best
weights restored, a checkpoint every epoch that ``resume`` continues from bit-for-bit, and on CUDA
mixed precision plus a batch size fitted to the GPU.

Data handling: the scaled feature matrix ``(N, F)`` and the sample bars are moved to the device
once; a batch is gathered there with one index operation (``features[bars[:, None] + offsets]``),
so there is no DataLoader, no per-batch Python collate and no ``lookback``-fold copy of the data.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.common import (
    EXIT_INTERRUPTED,
    PipelineError,
    ProgressLog,
    atomic_path,
    progress_bars_wanted,
)
from pipeline.config import MODEL_NAMES, TrainingConfig

log = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, str, str] = ("Fall", "Stationary", "Rise")
N_CLASSES = 3
CHECKPOINT_VERSION = 1

T = TypeVar("T")


class TrainingInterrupted(PipelineError):
    """Ctrl-C or SIGTERM during training; the last complete epoch's checkpoint is kept.

    ``last_epoch`` is the epoch of the checkpoint that exists now (0 = none, or not known),
    ``checkpoint_path`` where it is (None = no checkpoint: the run was stopped before its first
    epoch finished, or checkpoints were off). Callers must not promise a resume when
    :attr:`has_checkpoint` is false (issue 8 item 6).
    """

    exit_code = EXIT_INTERRUPTED

    def __init__(
        self,
        message: str,
        checkpoint_path: Path | None,
        last_epoch: int,
        epoch: int | None = None,
        what: str = "",
    ) -> None:
        super().__init__(message)
        self.checkpoint_path = checkpoint_path
        self.last_epoch = last_epoch
        self.epoch = epoch  # the epoch that was running, when known
        self.what = what  # e.g. "gru" or "gru/fold2"

    @property
    def has_checkpoint(self) -> bool:
        """Whether a checkpoint of a complete epoch exists, i.e. ``--resume`` continues it."""
        return self.last_epoch > 0 or self.checkpoint_path is not None


def interrupt_message(
    what: str,
    epoch: int | None,
    epochs: int,
    checkpoint_path: Path | None,
    last_saved: int,
    completed: int | None = None,
) -> str:
    """What is true after an interrupt: which epoch stopped and which checkpoint (if any) exists.

    Issue 8 item 6: a SIGTERM in the first epoch used to end in "checkpoint written" although
    none existed. ``completed`` is the last epoch that finished (default: ``last_saved``).
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


# ================================================================ models


def _rnn(cell: str, n_in: int, units: int, layers: int, dropout: float, bidir: bool) -> nn.RNNBase:
    cls = nn.LSTM if cell == "lstm" else nn.GRU
    # torch warns (and ignores it) when dropout is set on a single-layer RNN.
    return cls(
        n_in,
        units,
        num_layers=layers,
        dropout=dropout if layers > 1 else 0.0,
        batch_first=True,
        bidirectional=bidir,
    )


def _last_hidden(rnn: nn.RNNBase, x: torch.Tensor) -> torch.Tensor:
    """Final hidden state of the top layer, both directions concatenated: (B, H * dirs)."""
    _, h = rnn(x)
    h_n = h[0] if isinstance(h, tuple) else h  # (layers * dirs, B, H)
    if rnn.bidirectional:
        # h_n[-2] is the forward pass after the last bar, h_n[-1] the backward pass after the
        # first bar; both have read the whole window (out[:, -1] would not, for the backward one).
        return torch.cat([h_n[-2], h_n[-1]], dim=1)
    return h_n[-1]


class RNNClassifier(nn.Module):
    """Stacked LSTM / GRU (optionally bidirectional) -> dropout -> linear head with 3 logits."""

    def __init__(
        self,
        n_features: int,
        units: int,
        layers: int,
        dropout: float,
        cell: str = "lstm",
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        self.rnn = _rnn(cell, n_features, units, layers, dropout, bidirectional)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(units * (2 if bidirectional else 1), N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L, F) -> logits (B, 3)."""
        return self.head(self.dropout(_last_hidden(self.rnn, x)))


def moving_average(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """Centred moving average over time with replicate padding at the window's ends.

    ``x`` (B, L, F) -> (B, L, F). Replicating the first/last bar (as Autoformer's series
    decomposition does, Wu et al. 2021) keeps the trend's length equal to the window's and avoids
    the zero-padding dip at the ends.
    """
    if kernel <= 1:
        return x
    front, back = (kernel - 1) // 2, kernel // 2
    xt = x.transpose(1, 2)  # (B, F, L)
    xt = F.pad(xt, (front, back), mode="replicate")  # (B, F, L + kernel - 1)
    return F.avg_pool1d(xt, kernel_size=kernel, stride=1).transpose(1, 2)  # (B, L, F)


class DLSTMClassifier(nn.Module):
    """Decomposition LSTM: trend and remainder of the window, each through its own LSTM stack.

    Inside each window, trend = moving average (replicate padding), remainder = input - trend
    (series decomposition of Autoformer, Wu et al. 2021, and DLinear, Zeng et al. 2023). Each part
    goes through its own LSTM stack and linear head; the two heads' logits are summed, as DLinear
    sums its trend and remainder forecasts.
    """

    def __init__(
        self, n_features: int, units: int, layers: int, dropout: float, kernel: int
    ) -> None:
        super().__init__()
        self.kernel = int(kernel)
        self.trend_rnn = _rnn("lstm", n_features, units, layers, dropout, False)
        self.remainder_rnn = _rnn("lstm", n_features, units, layers, dropout, False)
        self.dropout = nn.Dropout(dropout)
        self.trend_head = nn.Linear(units, N_CLASSES)
        self.remainder_head = nn.Linear(units, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L, F) -> logits (B, 3)."""
        trend = moving_average(x, self.kernel)  # (B, L, F)
        remainder = x - trend  # (B, L, F)
        h_t = self.dropout(_last_hidden(self.trend_rnn, trend))  # (B, H)
        h_r = self.dropout(_last_hidden(self.remainder_rnn, remainder))  # (B, H)
        return self.trend_head(h_t) + self.remainder_head(h_r)


def arch_config(model: str, n_features: int, cfg: TrainingConfig) -> dict[str, Any]:
    """Everything needed to rebuild ``model``: name, input width and its sizes from ``cfg``."""
    return {"name": model, "n_features": int(n_features), **cfg.model_params(model)}


def build_model(arch: dict[str, Any]) -> nn.Module:
    """Instantiate the classifier described by :func:`arch_config`."""
    name = arch.get("name")
    if name not in MODEL_NAMES:
        raise PipelineError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    common = {
        "n_features": int(arch["n_features"]),
        "units": int(arch["units"]),
        "layers": int(arch["layers"]),
        "dropout": float(arch["dropout"]),
    }
    if name == "lstm":
        return RNNClassifier(**common, cell="lstm")
    if name == "gru":
        return RNNClassifier(**common, cell="gru")
    if name == "bilstm":
        return RNNClassifier(**common, cell="lstm", bidirectional=True)
    return DLSTMClassifier(**common, kernel=int(arch["kernel"]))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ================================================================ device, threads, AMP, batch size


def resolve_device(requested: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` without a GPU is a clear error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise PipelineError("device = cuda but no CUDA GPU is visible; set device = auto or cpu")
    if requested not in ("cpu", "cuda"):
        raise PipelineError(f"device = {requested!r}; expected auto, cpu or cuda")
    return torch.device(requested)


def physical_cores() -> int:
    """Physical CPU cores (psutil), falling back to the logical count."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except ImportError:
        n = None
    return int(n or os.cpu_count() or 1)


def configure_cpu_threads(num_threads: int) -> int:
    """Set torch's intra-op threads (0 = physical cores: hyper-threads slow GEMMs down)."""
    n = num_threads if num_threads > 0 else physical_cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def configure_cuda() -> None:
    """cuDNN on, with autotuning (the batch shapes repeat every step); no-op without CUDA."""
    if torch.cuda.is_available():
        torch.backends.cudnn.enabled = True
        torch.backends.cudnn.benchmark = True


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """Autocast dtype on CUDA: bf16 where supported (no loss scaling), else fp16; CPU: None."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def scale_batch_size(
    configured: int,
    free_bytes: int | None,
    n_train: int,
    reference_bytes: int = 10 * 2**30,
    max_factor: int = 8,
) -> int:
    """Batch size for a GPU with ``free_bytes`` free: ``configured`` x a power of two.

    The configured size is taken as right for about ``reference_bytes`` (10 GiB) of free memory;
    each doubling of free memory doubles the batch, up to ``max_factor`` x, and never beyond the
    training set (one full batch is the most an epoch can use). ``free_bytes=None`` (CPU) keeps
    the configured size.
    """
    size = configured
    if free_bytes is not None and free_bytes > reference_bytes:
        factor = 2 ** int(math.floor(math.log2(free_bytes / reference_bytes)))
        size = configured * min(factor, max_factor)
    return max(1, min(size, max(n_train, 1)))


def cuda_free_bytes(device: torch.device) -> int | None:
    """Free memory of the CUDA device, or None on CPU."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def is_oom_error(exc: BaseException) -> bool:
    """True for CUDA (or any torch) out-of-memory errors."""
    oom_type = getattr(torch, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def call_with_oom_retry(
    fn: Callable[[int], T],
    batch_size: int,
    min_batch_size: int = 8,
    on_oom: Callable[[int], None] | None = None,
) -> tuple[T, int]:
    """Run ``fn(batch_size)``; on out-of-memory halve the batch and retry instead of crashing.

    ``on_oom(new_batch_size)`` runs before each retry (e.g. to roll the model back to the start of
    the epoch). Returns ``(result, batch size that worked)``; raises PipelineError once the batch
    would drop below ``min_batch_size``.
    """
    size = batch_size
    while True:
        try:
            return fn(size), size
        except Exception as exc:
            if not is_oom_error(exc):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            new_size = size // 2
            if new_size < min_batch_size:
                raise PipelineError(
                    f"out of memory even at batch size {size} (minimum {min_batch_size}); "
                    "use smaller models or device = cpu"
                ) from None
            log.warning("out of memory at batch size %d; retrying with %d", size, new_size)
            size = new_size
            if on_oom is not None:
                on_oom(size)


# ================================================================ metrics


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """3x3 counts, rows = true class, columns = predicted class."""
    idx = np.asarray(y_true, dtype=np.int64) * N_CLASSES + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=N_CLASSES * N_CLASSES).reshape(N_CLASSES, N_CLASSES)


def metrics_from_confusion(cm: np.ndarray) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro-F1 (empty classes count as 0)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    total = cm.sum()
    return {
        "accuracy": float(tp.sum() / total) if total > 0 else 0.0,
        "macro_f1": float(f1.mean()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(CLASS_NAMES)
        },
        "confusion": cm.astype(np.int64).tolist(),
    }


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """:func:`metrics_from_confusion` of the labels and predictions."""
    return metrics_from_confusion(confusion_matrix(y_true, y_pred))


def class_weights(y: np.ndarray) -> np.ndarray:
    """Inverse-frequency weights ``n / (3 n_c)`` of the training labels (absent classes: 0)."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=N_CLASSES).astype(np.float64)
    weights = np.zeros(N_CLASSES)
    present = counts > 0
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


# ================================================================ data on the device


@dataclass
class WindowData:
    """Samples as bars into a device-resident feature matrix; a batch is one gather."""

    features: torch.Tensor  # (N, F) float32
    bars: torch.Tensor  # (n,) int64, the last bar of each window
    labels: torch.Tensor  # (n,) int64
    offsets: torch.Tensor  # (L,) int64: -L+1 .. 0

    @classmethod
    def create(
        cls,
        features: np.ndarray | torch.Tensor,
        bars: np.ndarray,
        labels: np.ndarray | None,
        lookback: int,
        device: torch.device,
    ) -> WindowData:
        """Move everything to ``device`` once; checks every window lies inside the matrix."""
        feats = torch.as_tensor(features, dtype=torch.float32).to(device)  # (N, F)
        bars_np = np.asarray(bars, dtype=np.int64)
        if bars_np.size and (bars_np.min() < lookback - 1 or bars_np.max() >= feats.shape[0]):
            raise PipelineError(
                f"sample bars {bars_np.min()}..{bars_np.max()} need a full window of {lookback} "
                f"bars inside 0..{feats.shape[0] - 1}"
            )
        labels_np = np.zeros_like(bars_np) if labels is None else np.asarray(labels, np.int64)
        return cls(
            features=feats,
            bars=torch.as_tensor(bars_np).to(device),
            labels=torch.as_tensor(labels_np).to(device),
            offsets=torch.arange(-lookback + 1, 1, device=device),
        )

    def __len__(self) -> int:
        return int(self.bars.shape[0])

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows and labels of samples ``idx``: X (B, L, F), y (B,)."""
        rows = self.bars[idx].unsqueeze(1) + self.offsets  # (B, L)
        return self.features[rows], self.labels[idx]


# ================================================================ training loop


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


@contextlib.contextmanager
def sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM raises KeyboardInterrupt (main thread only; elsewhere a no-op).

    A pod being stopped sends SIGTERM; turning it into KeyboardInterrupt gives it the same path
    as Ctrl-C: the last complete checkpoint is kept and the run exits 130 with a resume hint.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cpu_state(state: dict[str, Any]) -> dict[str, Any]:
    """Deep copy of a (nested) state dict with every tensor cloned to the CPU."""
    if isinstance(state, dict):
        return {k: _cpu_state(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_cpu_state(v) for v in state]
    if isinstance(state, tuple):
        return tuple(_cpu_state(v) for v in state)
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    return copy.deepcopy(state)


def _rng_state(gen: torch.Generator) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "perm": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["perm"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temp file beside ``path``, then rename: never a half-written file."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when absent or unreadable (logged)."""
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
    model.eval()
    n = len(data)
    device = data.features.device
    loss_sum = torch.zeros((), device=device)
    cm = torch.zeros(N_CLASSES * N_CLASSES, dtype=torch.int64, device=device)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            idx = torch.arange(start, min(start + batch_size, n), device=device)
            x, y = data.batch(idx)  # (B, L, F), (B,)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(x)
            loss_sum += loss_fn(logits.float(), y) * len(idx)
            cm += torch.bincount(y * N_CLASSES + logits.argmax(1), minlength=N_CLASSES**2)
    return float(loss_sum) / max(n, 1), cm.cpu().numpy().reshape(N_CLASSES, N_CLASSES)


def predict_proba(
    model: nn.Module,
    data: WindowData,
    batch_size: int = 4096,
    amp: bool = False,
) -> np.ndarray:
    """Class probabilities (n, 3) float64 for every sample of ``data``, in batched passes."""
    model.eval()
    device = data.features.device
    dtype = amp_dtype(device, amp)
    out = []
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(data)), device=device)
            x, _ = data.batch(idx)  # (B, L, F)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(x)
            out.append(torch.softmax(logits.double(), dim=1).cpu())
    if not out:
        return np.zeros((0, N_CLASSES))
    return torch.cat(out).numpy()


class _EpochProgress:
    """A tqdm bar over epochs (terminal), or a :class:`ProgressLog` line with ETA (no terminal).

    Issue 8 item 26: under ``runpod_main.py`` the output is a pipe and a bar is invisible, so
    without a terminal a line "``desc`` epoch e/E: done/total batches (pct), elapsed, ETA" is
    logged at most every ``interval_s`` seconds, also in the middle of a long epoch. The ETA
    assumes every epoch runs; early stopping may end sooner.
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
    device = train.features.device
    dtype = amp_dtype(device, cfg.amp)
    amp_name = "off" if dtype is None else str(dtype).replace("torch.", "")
    if device.type == "cuda":
        configure_cuda()
        batch_size = scale_batch_size(cfg.batch_size, cuda_free_bytes(device), len(train))
    else:
        batch_size = max(1, min(cfg.batch_size, len(train)))
    model.to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )
    # fp16 needs loss scaling against gradient underflow; bf16 has fp32's exponent range.
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    weights = torch.as_tensor(class_weights(train.labels.cpu().numpy()), dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(device))
    gen = torch.Generator().manual_seed(cfg.seed)

    history: list[dict[str, float]] = []
    best_val = math.inf
    best_epoch = 0
    best_state: dict[str, Any] = _cpu_state(model.state_dict())
    bad_epochs = 0
    start_epoch = 1
    elapsed_before = 0.0

    if resume and checkpoint_path is not None:
        ckpt = load_checkpoint(checkpoint_path)
        if ckpt is not None and ckpt.get("fingerprint") != fingerprint:
            log.warning(
                "checkpoint %s belongs to another run (config or data changed); starting fresh",
                checkpoint_path,
            )
            ckpt = None
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scaler.load_state_dict(ckpt["grad_scaler"])
            _set_rng_state(ckpt["rng"], gen)
            history = list(ckpt["history"])
            best_val, best_epoch = float(ckpt["best_val_loss"]), int(ckpt["best_epoch"])
            best_state = ckpt["best_state"]
            bad_epochs = int(ckpt["bad_epochs"])
            batch_size = int(ckpt["batch_size"])
            start_epoch = int(ckpt["epoch"]) + 1
            elapsed_before = float(ckpt["train_seconds"])
            log.info("%s: resuming after epoch %d from %s", desc, start_epoch - 1, checkpoint_path)
        elif resume:
            log.info("%s: nothing to resume; training from scratch", desc)

    def snapshot(epoch: int) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "fingerprint": fingerprint,
            "epoch": epoch,
            "model": _cpu_state(model.state_dict()),
            "optimizer": _cpu_state(optimizer.state_dict()),
            "grad_scaler": scaler.state_dict(),
            "rng": _rng_state(gen),
            "history": history,
            "best_val_loss": best_val,
            "best_epoch": best_epoch,
            "best_state": best_state,
            "bad_epochs": bad_epochs,
            "batch_size": batch_size,
            "train_seconds": elapsed_before + (time.perf_counter() - t0),
        }

    def restore(state: dict[str, Any]) -> None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["grad_scaler"])
        _set_rng_state(state["rng"], gen)

    def run_epoch(bs: int) -> tuple[float, float]:
        model.train()
        n = len(train)
        progress_out.start(current_epoch, -(-n // bs))
        perm = torch.randperm(n, generator=gen).to(device)  # (n,)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for i, start in enumerate(range(0, n, bs)):
            idx = perm[start : start + bs]
            x, y = train.batch(idx)  # (B, L, F), (B,)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(x)  # (B, 3)
            loss = loss_fn(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            # Accumulate on the device: no host sync per batch.
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == y).sum()
            progress_out.batch(current_epoch, i + 1)
        return float(loss_sum) / n, float(correct) / n

    t0 = time.perf_counter()
    last_saved = start_epoch - 1
    stopped_early = bad_epochs >= cfg.patience
    want_bar = progress_bars_wanted() if progress is None else progress
    progress_out = _EpochProgress(desc, cfg.epochs, start_epoch, want_bar, progress_interval_s)
    current_epoch = start_epoch
    completed = start_epoch - 1
    epoch_start_state = snapshot(start_epoch - 1) if start_epoch <= cfg.epochs else None
    try:
        for epoch in range(start_epoch, cfg.epochs + 1):
            if stopped_early:
                break
            current_epoch = epoch
            te = time.perf_counter()
            assert epoch_start_state is not None
            start_state = epoch_start_state
            (train_loss, train_acc), batch_size = call_with_oom_retry(
                run_epoch, batch_size, on_oom=lambda _bs, s=start_state: restore(s)
            )
            val_loss, cm = _evaluate(model, val, loss_fn, max(batch_size, 1024), dtype)
            val_metrics = metrics_from_confusion(cm)
            if val_loss < best_val:
                best_val, best_epoch, bad_epochs = val_loss, epoch, 0
                best_state = _cpu_state(model.state_dict())
            else:
                bad_epochs += 1
            record = {
                "epoch": epoch,
                "train_loss": train_loss,
                "train_accuracy": train_acc,
                "val_loss": val_loss,
                "val_accuracy": val_metrics["accuracy"],
                "val_macro_f1": val_metrics["macro_f1"],
                "lr": float(optimizer.param_groups[0]["lr"]),
                "epoch_seconds": time.perf_counter() - te,
                "batch_size": batch_size,
            }
            history.append(record)
            completed = epoch
            stopped_early = bad_epochs >= cfg.patience
            epoch_start_state = snapshot(epoch)
            if checkpoint_path is not None:
                save_checkpoint(checkpoint_path, epoch_start_state)
                last_saved = epoch
            progress_out.epoch_done(
                loss=f"{train_loss:.4f}",
                val_loss=f"{val_loss:.4f}",
                val_f1=f"{val_metrics['macro_f1']:.3f}",
            )
            log.debug(
                "%s epoch %d: train %.4f val %.4f f1 %.3f (%.1fs)",
                desc,
                epoch,
                train_loss,
                val_loss,
                val_metrics["macro_f1"],
                record["epoch_seconds"],
            )
            if epoch_callback is not None:
                epoch_callback(epoch, record)
    except KeyboardInterrupt:
        # Say what is true: a checkpoint exists only once an epoch finished (or was resumed).
        raise TrainingInterrupted(
            interrupt_message(
                desc, current_epoch, cfg.epochs, checkpoint_path, last_saved, completed
            ),
            checkpoint_path if last_saved > 0 else None,
            last_saved,
            epoch=current_epoch,
            what=desc,
        ) from None
    finally:
        progress_out.close()

    model.load_state_dict(best_state)
    return TrainResult(
        model=model,
        history=history,
        best_epoch=best_epoch,
        epochs_run=len(history),
        best_val_loss=best_val,
        train_seconds=elapsed_before + (time.perf_counter() - t0),
        device=str(device),
        batch_size=batch_size,
        amp=amp_name,
        resumed_from_epoch=start_epoch - 1,
        stopped_early=stopped_early,
    )


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA); numpy is only used through seeded Generators elsewhere."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# ================================================================ model files

MODEL_FILE_FORMAT = 1
REQUIRED_MODEL_KEYS = (
    "format",
    "model",
    "arch",
    "state_dict",
    "feature_names",
    "lookback",
    "label",
    "dataset_sha256",
    "config_hash",
    "scaler",
)


def save_model_file(path: Path, payload: dict[str, Any]) -> Path:
    """Write a model payload atomically; it must load with ``torch.load(weights_only=True)``."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_model_file(path: Path) -> dict[str, Any]:
    """Read a model file written by :func:`save_model_file` (weights-only unpickling).

    Raises:
        PipelineError: missing file, unreadable file, or a payload without the expected keys.
    """
    if not path.is_file():
        raise PipelineError(f"{path}: model file not found; run train_models.py first")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc).strip()
        first = text.splitlines()[0][:200] if text else ""
        raise PipelineError(
            f"{path}: unreadable model file ({type(exc).__name__}: {first})"
        ) from None
    if not isinstance(payload, dict):
        raise PipelineError(f"{path}: not a model file (expected a dict payload)")
    missing = [k for k in REQUIRED_MODEL_KEYS if k not in payload]
    if missing:
        raise PipelineError(f"{path}: model file lacks {', '.join(missing)}; retrain it")
    if payload["format"] != MODEL_FILE_FORMAT:
        raise PipelineError(
            f"{path}: model file format {payload['format']}, expected {MODEL_FILE_FORMAT}; "
            "retrain it"
        )
    return payload


def model_from_payload(payload: dict[str, Any], device: torch.device) -> nn.Module:
    """Rebuild the classifier of a model file on ``device`` in eval mode."""
    model = build_model(payload["arch"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise PipelineError(
            f"model {payload['model']!r}: weights do not fit its architecture ({exc})"
        ) from None
    return model.to(device).eval()
