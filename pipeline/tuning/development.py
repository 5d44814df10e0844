"""The development-only data of the classifier stage.

Trials never see the test block: the classifier stage cuts the dataset before the first row any
test window of any lookback in the space reads (:func:`development_rows`) and splits the rest into
train and validation only (:func:`development_arrays`); the agent stage keeps only the agent's
train and val blocks (``tune.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.config.schema import Config, TrainingConfig
from pipeline.data.splits import (
    MIN_BLOCK_SAMPLES,
    Block,
    SplitError,
    Splits,
    make_splits,
    resolve_purge,
)
from pipeline.tuning.space import SearchSpace

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.classifiers.prepare import ClassifierArrays

log = logging.getLogger("tune")  # the line that says which rows the trials see, as tune.py logs it


def lookbacks_of(space: SearchSpace, cfg: TrainingConfig) -> list[int]:
    """Every lookback a trial can use: the space's values, else the config's."""
    p = space.get("training.lookback")
    return [int(v) for v in p.values()] if p is not None else [int(cfg.lookback)]


def development_rows(
    n_rows: int, warmup: int, cfg: TrainingConfig, lookbacks: Iterable[int]
) -> int:
    """Rows a classifier trial may see: those before the first row that any test-block window
    reads (bar ``test.start - lookback + 1``) for any lookback in ``lookbacks``, where ``test`` is
    the test block the full pipeline would use on all ``n_rows`` rows. Rows from there on never
    reach a trial, whichever lookback wins."""
    cut = n_rows
    for lookback in lookbacks:
        splits = make_splits(
            n_rows,
            warmup,
            lookback,
            cfg.smoothing_k,
            cfg.test_fraction,
            cfg.val_fraction,
            cfg.purge_gap,
            cfg.walk_forward_folds,
        )
        cut = min(cut, splits.test.start - lookback + 1)
    return cut


def development_splits(
    n_rows: int, warmup: int, lookback: int, k: int, val_fraction: float, purge_gap: int | None
) -> Splits:
    """Train and validation blocks over a development frame of ``n_rows`` rows, laid out like
    :func:`pipeline.data.splits.make_splits` lays out the development block (validation = its last
    ``val_fraction``, a purge gap before it); ``test`` is empty and there are no folds."""
    purge = resolve_purge(purge_gap, k, lookback)
    first = warmup + lookback - 1
    last = n_rows - k - 1
    dev = Block("dev", first, last + 1)
    n_val = int(round(len(dev) * val_fraction))
    val = Block("val", dev.stop - n_val, dev.stop)
    train = Block("train", first, val.start - purge)
    for block in (train, val):
        if len(block) < MIN_BLOCK_SAMPLES:
            raise SplitError(
                f"the development rows ({n_rows}) leave block '{block.name}' {len(block)} "
                f"sample bars with lookback {lookback} (needs >= {MIN_BLOCK_SAMPLES}); use a "
                "longer dataset or smaller lookbacks in the search space"
            )
    empty = Block("test", last + 1, last + 1)
    return Splits(train, val, empty, dev, [], purge, first, last)


def development_arrays(
    df: pd.DataFrame, cfg: TrainingConfig, features: np.ndarray | None = None
) -> ClassifierArrays:
    """:func:`pipeline.classifiers.prepare.build_classifier_arrays` for a development frame: the
    same features, labels (threshold from the train block), train-only scaler, with
    :func:`development_splits`. ``features`` (``compute_features`` of ``df``, unscaled) may be
    passed to reuse them across trials (they do not depend on the tuned keys)."""
    from pipeline.classifiers.prepare import ClassifierArrays, apply_scaler, fit_scaler
    from pipeline.data.features import (
        check_feature_names,
        compute_features,
        utc_index,
        warmup_bars,
    )
    from pipeline.data.labels import auto_threshold, make_labels, smoothed_future_return

    names = check_feature_names(cfg.resolved_features())
    warm = warmup_bars(names)
    splits = development_splits(
        len(df), warm, cfg.lookback, cfg.smoothing_k, cfg.val_fraction, cfg.purge_gap
    )
    if features is None:
        features = compute_features(df, names).to_numpy(dtype=np.float32)  # (N, F)
    close = np.asarray(df["close"], dtype=np.float64)
    r = smoothed_future_return(close, cfg.smoothing_k)
    delta = (
        auto_threshold(r[splits.train.bars()])
        if cfg.threshold_delta is None
        else float(cfg.threshold_delta)
    )
    scaler = fit_scaler(features, splits.train, cfg.lookback)
    return ClassifierArrays(
        feature_names=names,
        lookback=cfg.lookback,
        k=cfg.smoothing_k,
        delta=float(delta),
        delta_auto=cfg.threshold_delta is None,
        timestamps=utc_index(df["timestamp"]).to_numpy(),
        open=np.asarray(df["open"], dtype=np.float64),
        close=close,
        features=features,
        price_features=np.empty((len(df), 0), dtype=np.float32),  # the agent's, unused here
        r=r,
        labels=make_labels(r, delta),
        splits=splits,
        scaler=scaler,
        scaled=apply_scaler(scaler, features),
        warmup=warm,
    )


def development_frame(
    dataset: str, cfg: Config, datasets: Path, space: SearchSpace
) -> tuple[pd.DataFrame, np.ndarray]:
    """``dataset`` (a name under ``datasets`` or a CSV path) cut to the rows a classifier trial
    may see, and its unscaled features (``(cut, F)``): the test block and the windows that read
    it are gone."""
    from pipeline.data.features import check_feature_names, compute_features, warmup_bars
    from pipeline.data.load import load_dataset

    df, _info = load_dataset(dataset, datasets)
    names = check_feature_names(cfg.training.resolved_features())
    cut = development_rows(
        len(df), warmup_bars(names), cfg.training, lookbacks_of(space, cfg.training)
    )
    # The test block (and the purge rows before its first window) is gone from here on.
    n_rows = len(df)
    dev = df.iloc[:cut].reset_index(drop=True).copy()
    del df
    log.info(
        "classifier trials see rows 0..%d of %d (%s .. %s): the test block and its windows are "
        "cut off",
        cut - 1,
        n_rows,
        dev["timestamp"].iloc[0],
        dev["timestamp"].iloc[-1],
    )
    features = compute_features(dev, names).to_numpy(dtype="float32")  # (cut, F)
    return dev, features
