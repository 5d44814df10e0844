"""Sample windows on the device and batched inference over them.

The scaled feature matrix ``(N, F)`` and the sample bars are moved to the device once; a batch is
gathered there with one index operation (``features[bars[:, None] + offsets]``), so there is no
DataLoader, no per-batch Python collate and no ``lookback``-fold copy of the data. This is the one
windowing implementation: training, prediction, the tests and bench/bench_data_prep.py all use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.classifiers.metrics import N_CLASSES
from pipeline.common import PipelineError
from pipeline.device import amp_dtype


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
