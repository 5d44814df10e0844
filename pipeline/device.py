"""The one place that picks the torch device and tunes it: CPU threads, cuDNN, AMP dtype, the
batch size fitted to the GPU's free memory, retry on out-of-memory, and seeding.

Used by the classifier loop and by PPO (which passes ``str(device)`` to stable-baselines3).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from typing import TypeVar

import torch

from pipeline.common import PipelineError

log = logging.getLogger(__name__)

T = TypeVar("T")


def resolve_device(requested: str, key: str = "device") -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` without a GPU is a clear error.

    ``key`` names the setting in the error (``device``, ``ppo device``). The one device helper of
    the classifiers and of PPO (which passes ``str(device)`` on to stable-baselines3).
    """
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise PipelineError(f"{key} = cuda but no CUDA GPU is visible; set {key} = auto or cpu")
    if requested not in ("cpu", "cuda"):
        raise PipelineError(f"{key} = {requested!r}; expected auto, cpu or cuda")
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


MIN_BATCH = 32
"""The smallest batch :func:`scale_batch_size` cuts to for the sake of ``min_steps`` (below it a
step's gradient is mostly noise and a CPU epoch mostly Python overhead)."""


def scale_batch_size(
    configured: int,
    free_bytes: int | None,
    n_train: int,
    reference_bytes: int = 10 * 2**30,
    max_factor: int = 8,
    min_steps: int = 1,
    min_batch: int = MIN_BATCH,
) -> int:
    """The training batch: ``configured``, grown on a large GPU, cut where an epoch would be
    too short.

    On CUDA the configured size is taken as right for about ``reference_bytes`` (10 GiB) of free
    memory; each doubling of free memory doubles the batch, up to ``max_factor`` x, never beyond
    the training set. On every device (issue 17 item 3: an H200 once grew it to 8,192 on ~8,600
    windows, one or two optimizer steps per epoch; the demo's 512 on ~5,100 windows gave 10) the
    batch is at most ``n_train // min_steps``, so an epoch keeps ``min_steps`` optimizer steps,
    but never below ``min_batch`` (or the configured size, if smaller): tiny datasets keep
    batches worth a step. ``free_bytes=None`` (CPU) grows nothing.
    """
    size = configured
    if free_bytes is not None and free_bytes > reference_bytes:
        factor = 2 ** int(math.floor(math.log2(free_bytes / reference_bytes)))
        size = configured * min(factor, max_factor)
    floor = min(configured, min_batch)
    size = min(size, max(floor, n_train // max(min_steps, 1)))  # keeps min_steps per epoch
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


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA); numpy is only used through seeded Generators elsewhere."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
