"""Where can a recurrent network beat the tabular models? A probe on the sequential ladder rows.

The classifier ladder (``bench_classifier_ladder.py``) found the networks no better than
``logreg`` on ``echo`` and ``vol_echo``, whose signal is an ordering inside the window. This probe
asks why, outside the pipeline's recipe: one GRU (48 units, Adam 1e-3, batch 128, class-weighted
loss, the epoch with the best validation macro-F1 kept) on the pipeline's own windows (lookback
32, smoothing_k 5, train-only scaler) against a logistic regression on the same window's last
bar and mean (what ``logreg`` sees), for two inputs: the 26 default features, and only the six
per-bar ones (``ret_1, hl_range, body, upper_wick, lower_wick, volume_ratio_24``), at two series
lengths. Test macro-F1 of the validation-best epoch.

    python bench/bench_sequence_probe.py                     # echo and vol_echo, 8k and 40k bars
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from _common import cpu_model
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from torch import nn

from pipeline.classifiers.prepare import build_classifier_arrays
from pipeline.data.features import DEFAULT_FEATURES
from pipeline.data.features import PER_BAR_FEATURES as PER_BAR
from pipeline.data.synthetic import generate_ohlcv

HERE = Path(__file__).resolve().parent
LOOKBACK = 32


def windows(a: object, block: object) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X (n, LOOKBACK, F), y (n,))`` of a block's labelled bars."""
    bars = block.bars()  # type: ignore[attr-defined]
    bars = bars[a.labels[bars] >= 0]  # type: ignore[attr-defined]
    idx = bars[:, None] + np.arange(-LOOKBACK + 1, 1)[None]  # (n, L)
    x = torch.tensor(a.scaled[idx])  # type: ignore[attr-defined]
    return x, torch.tensor(a.labels[bars].astype(np.int64))  # type: ignore[attr-defined]


class GRUClassifier(nn.Module):
    def __init__(self, n_features: int, hidden: int = 48) -> None:
        super().__init__()
        self.gru = nn.GRU(n_features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, F) -> (B, 3)
        return self.head(self.gru(x)[0][:, -1])


def probe(kind: str, bars: int, features: tuple[str, ...], epochs: int, seed: int) -> dict:
    """Test macro-F1 of the logistic regression and of the GRU's validation-best epoch."""
    torch.manual_seed(seed)
    a = build_classifier_arrays(
        generate_ohlcv(bars, signal=1.0, seed=seed, kind=kind), features, LOOKBACK
    )
    (xtr, ytr), (xva, yva), (xte, yte) = (
        windows(a, b) for b in (a.splits.train, a.splits.val, a.splits.test)
    )

    def summary(x: torch.Tensor) -> np.ndarray:
        return np.concatenate([x[:, -1].numpy(), x.mean(1).numpy()], axis=1)  # (n, 2F)

    lr = LogisticRegression(max_iter=2000, class_weight="balanced").fit(summary(xtr), ytr)
    out = {"logreg": f1_score(yte, lr.predict(summary(xte)), average="macro")}
    model = GRUClassifier(xtr.shape[2])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    counts = np.bincount(ytr.numpy(), minlength=3)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(len(ytr) / (3 * counts), dtype=torch.float32))
    best_val, best_test = -1.0, 0.0
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(xtr))
        for i in range(0, len(order), 128):
            b = order[i : i + 128]
            opt.zero_grad()
            loss_fn(model(xtr[b]), ytr[b]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val = f1_score(yva, model(xva).argmax(1), average="macro")
            if val > best_val:
                best_val = val
                best_test = f1_score(yte, model(xte).argmax(1), average="macro")
    out["gru"] = best_test
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kinds", default="echo,vol_echo", help="synthetic kinds (comma-separated)")
    p.add_argument("--bars", default="8000,40000", help="series lengths (comma-separated)")
    p.add_argument("--epochs", type=int, default=15, help="GRU epochs (best validation kept)")
    p.add_argument("--seed", type=int, default=1, help="series and network seed")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    inputs = {"26 default": tuple(DEFAULT_FEATURES), "6 per-bar": PER_BAR}
    lines = [
        "# Where a recurrent network can beat the tabular models (`bench/bench_sequence_probe.py`)",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical cores; Python "
        f"{platform.python_version()}, torch {torch.__version__} (1 thread).",
        f"Command: `python bench/bench_sequence_probe.py --kinds {args.kinds} --bars {args.bars} "
        f"--epochs {args.epochs} --seed {args.seed}`. Test macro-F1; logreg on the window's last "
        "bar and mean, the GRU's epoch with the best validation macro-F1.",
        "",
        "| kind | bars | input | logreg | GRU | GRU - logreg |",
        "|---|---:|---|---:|---:|---:|",
    ]
    t0 = time.perf_counter()
    for kind in args.kinds.split(","):
        for bars in (int(b) for b in args.bars.split(",")):
            for label, feats in inputs.items():
                r = probe(kind, bars, feats, args.epochs, args.seed)
                lines.append(
                    f"| {kind} | {bars:,} | {label} | {r['logreg']:.3f} | {r['gru']:.3f} | "
                    f"{r['gru'] - r['logreg']:+.3f} |"
                )
                print(lines[-1], flush=True)
    lines += ["", f"Wall time {time.perf_counter() - t0:.0f} s."]
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "sequence_probe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
