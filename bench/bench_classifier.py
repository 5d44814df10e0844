"""Benchmark classifier training: samples per second per architecture and the loop's overhead.

For each size preset (``smoke`` = the tiny test sizes, ``default`` = training_config.txt's
defaults) and each architecture, on random windows of ``lookback x 26`` features:

* **loop epoch**: wall time of one epoch of ``pytorch_train.train_classifier`` measured between
  epoch-end callbacks: the training pass (gather of each batch from the device-resident matrix,
  forward, weighted loss, backward, clipping, Adam step), the validation pass, metrics and the
  atomic checkpoint write. Median over every epoch of every repeat.
* **bare**: the same number of forward+backward+Adam steps over batches already materialised in
  memory (no gather, no clipping, no bookkeeping), plus the bare forward passes over the
  validation batches (early stopping needs them), median over repeats.
* **overhead ratio** = loop epoch / bare; target <= 1.15.

Usage::

    python bench/bench_classifier.py                      # smoke + default sizes on CPU
    python bench/bench_classifier.py --sizes smoke --windows 10000 --epochs 3 --repeats 3
    python bench/bench_classifier.py --device cuda --amp on   # on a GPU pod

Results are printed as markdown and written to ``bench/results/classifier.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import cpu_model, load_average
from torch import nn

from pipeline.classifiers.nets import arch_config, build_classifier, count_parameters
from pipeline.classifiers.windows import WindowData
from pipeline.common import atomic_write_text
from pipeline.config.files import load_config
from pipeline.config.schema import MODEL_NAMES
from pipeline.device import (
    amp_dtype,
    configure_cpu_threads,
    physical_cores,
    resolve_device,
    seed_everything,
)
from pytorch_train import train_classifier

N_FEATURES = 26


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_data(
    n_train: int, n_val: int, lookback: int, device: torch.device, seed: int = 0
) -> tuple[WindowData, WindowData]:
    """Random features with ``n_train + n_val`` windows (train first, then val)."""
    rng = np.random.default_rng(seed)
    n_rows = n_train + n_val + lookback - 1
    x = rng.standard_normal((n_rows, N_FEATURES)).astype(np.float32)  # (N, F)
    bars = np.arange(lookback - 1, n_rows)  # (n_train + n_val,)
    y = rng.integers(0, 3, len(bars))
    train = WindowData.create(x, bars[:n_train], y[:n_train], lookback, device)
    val = WindowData.create(x, bars[n_train:], y[n_train:], lookback, device)
    return train, val


def loop_epochs(
    model_name: str, cfg: Any, train: WindowData, val: WindowData, ckpt_dir: Path
) -> tuple[list[tuple[float, float]], int, float]:
    """Per-epoch (wall, process CPU) seconds of the real training loop (callback to callback),
    the batch size the loop used (auto-sized on CUDA) and its learning rate."""
    seed_everything(cfg.seed)
    model = build_classifier(arch_config(model_name, N_FEATURES, cfg))
    marks: list[tuple[float, float]] = []
    used: dict[str, float] = {}
    device = train.features.device

    def mark(epoch: int, record: dict[str, float]) -> None:
        _sync(device)
        marks.append((time.perf_counter(), time.process_time()))
        used.update(batch_size=record["batch_size"], lr=record["lr"])

    _sync(device)
    t0 = (time.perf_counter(), time.process_time())
    train_classifier(
        model,
        train,
        val,
        cfg,
        checkpoint_path=ckpt_dir / f"bench-{model_name}.pt",
        epoch_callback=mark,
        progress=False,
    )
    points = np.array([t0, *marks])  # (epochs + 1, 2)
    times = [tuple(d) for d in np.diff(points, axis=0)]
    return times, int(used["batch_size"]), float(used["lr"])


def bare_epoch(
    model_name: str, cfg: Any, train: WindowData, val: WindowData, batch_size: int
) -> tuple[float, float]:
    """Forward+backward+step over pre-materialised batches of ``batch_size`` (the loop's own)
    plus bare val forwards (wall, CPU)."""
    device = train.features.device
    seed_everything(cfg.seed)
    model = build_classifier(arch_config(model_name, N_FEATURES, cfg)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    dtype = amp_dtype(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    loss_fn = nn.CrossEntropyLoss()
    bs = min(batch_size, len(train))
    perm = torch.randperm(len(train), device=device)
    batches = [train.batch(perm[i : i + bs]) for i in range(0, len(train), bs)]
    vbs = max(bs, 1024)
    vbatches = [
        val.batch(torch.arange(i, min(i + vbs, len(val)), device=device))
        for i in range(0, len(val), vbs)
    ]
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    model.train()
    for x, y in batches:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    model.eval()
    with torch.no_grad():
        for x, _ in vbatches:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                model(x)
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def run(args: argparse.Namespace) -> str:
    """Run the benchmark; returns the markdown report."""
    device = resolve_device(args.device)
    threads = configure_cpu_threads(args.threads) if device.type == "cpu" else 0
    load = load_average()
    rows = []
    for size in args.sizes.split(","):
        preset = "smoke" if size == "smoke" else None
        overrides = [
            "lookback=60",  # the bench always uses 60 x 26 windows
            f"epochs={args.epochs}",
            f"patience={args.epochs + 1}",
            f"amp={'true' if args.amp == 'on' else 'false'}",
            f"training.device={args.device}",
        ]
        if args.batch_size:
            overrides.append(f"training.batch_size={args.batch_size}")
        cfg = load_config(None, None, preset, overrides).training
        n_train = args.windows if size == "smoke" else args.default_windows
        n_val = max(1, n_train // 4)  # val_fraction 0.2 of dev ~ a quarter of train
        train, val = make_data(n_train, n_val, cfg.lookback, device)
        for name in args.models.split(","):
            loop_times: list[tuple[float, float]] = []
            bare_times: list[tuple[float, float]] = []
            with tempfile.TemporaryDirectory() as tmp:
                for _ in range(args.repeats):
                    times, batch, lr = loop_epochs(name, cfg, train, val, Path(tmp))
                    loop_times += times
                    bare_times.append(bare_epoch(name, cfg, train, val, batch))
            loop_s = statistics.median(t[0] for t in loop_times)
            bare_s = statistics.median(t[0] for t in bare_times)
            loop_cpu = statistics.median(t[1] for t in loop_times)
            bare_cpu = statistics.median(t[1] for t in bare_times)
            n_params = count_parameters(build_classifier(arch_config(name, N_FEATURES, cfg)))
            p = cfg.model_params(name)
            rows.append(
                f"| {size} | {name} | {p['units']}x{p['layers']} | {n_params:,} | {n_train:,} | "
                f"{batch} | {-(-n_train // batch)} | {lr:.2g} | {len(loop_times)} | {loop_s:.3f} | "
                f"{bare_s:.3f} | {loop_s / bare_s:.3f} | {loop_cpu / bare_cpu:.3f} | "
                f"{n_train / loop_s:,.0f} |"
            )
            print(rows[-1], flush=True)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    command = "python " + shlex.join([str(Path(sys.argv[0])), *sys.argv[1:]])
    amp = amp_dtype(device, args.amp == "on")
    header = [
        "# Classifier training benchmark",
        "",
        f"- machine: {cpu_model()}, {physical_cores()} physical / {os.cpu_count()} logical "
        f"cores; GPU: {gpu}",
        f"- torch {torch.__version__}, device {device}, threads {threads or 'n/a'}, "
        f"AMP {'off' if amp is None else str(amp).replace('torch.', '')}",
        f"- load average when started: {load:.2f} (other processes share the CPU)",
        f"- command: `{command}`",
        f"- windows of {60} x {N_FEATURES} random features, validation = a quarter of train; "
        "medians over every epoch of every repeat (loop) and over repeats (bare); "
        "the CPU-time ratio (process CPU seconds) is robust to other processes on the machine "
        "when threads = 1",
        "",
        "| sizes | model | units x layers | params | train windows | batch used | steps/epoch | "
        "lr | epochs timed | "
        "loop epoch s | bare s | overhead ratio (wall) | overhead ratio (CPU time) | samples/s |",
        "|" + "---|" * 14,
    ]
    return "\n".join(header + rows) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="smoke,default", help="comma list of smoke, default")
    p.add_argument("--models", default=",".join(MODEL_NAMES), help="comma list of models")
    p.add_argument("--windows", type=int, default=10_000, help="train windows, smoke sizes")
    p.add_argument(
        "--default-windows",
        type=int,
        default=10_000,
        help="train windows for default sizes (fewer keeps a CPU run short)",
    )
    p.add_argument("--epochs", type=int, default=3, help="epochs per loop run")
    p.add_argument("--repeats", type=int, default=3, help="loop runs / bare runs per model")
    p.add_argument("--batch-size", type=int, default=0, help="override the preset's batch size")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--amp", default="on", choices=("on", "off"), help="mixed precision on CUDA")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = physical cores)")
    p.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "classifier.md"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run and write the report."""
    args = build_parser().parse_args(argv)
    report = run(args)
    print(report)
    atomic_write_text(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
