"""Load a dataset and turn it into model-ready arrays, with the train-only scaler saved beside it.

Steps 5 (classifiers) and 7 (PPO agent) both start here, so the two see the very same features,
labels, splits and scaler for a dataset.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.common import Paths, PipelineError, atomic_write_bytes
from pipeline.config import TrainingConfig
from pipeline.data import DatasetInfo, load_dataset
from pipeline.features import PreparedArrays, prepare_arrays

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A validated dataset and its arrays (features, scaled features, labels, splits, scaler)."""

    info: DatasetInfo
    df: pd.DataFrame
    arrays: PreparedArrays
    feature_names: list[str]


def scaler_path(paths: Paths, dataset: str) -> Path:
    """Where the train-block scaler of ``dataset`` is saved."""
    return paths.scalers / f"scaler_{dataset}.pkl"


def arrays_from_config(df: pd.DataFrame, cfg: TrainingConfig) -> PreparedArrays:
    """:func:`pipeline.features.prepare_arrays` of a validated frame with ``cfg``'s settings.

    The one place that maps config keys to the arguments (features, lookback, label and split
    settings), shared by :func:`prepare_dataset` and bench/bench_data_prep.py.
    """
    return prepare_arrays(
        df,
        cfg.resolved_features(),
        lookback=cfg.lookback,
        k=cfg.smoothing_k,
        delta=cfg.threshold_delta,
        test_fraction=cfg.test_fraction,
        val_fraction=cfg.val_fraction,
        purge_gap=cfg.purge_gap,
        n_folds=cfg.walk_forward_folds,
    )


def prepare_dataset(
    cfg: TrainingConfig, dataset: str, paths: Paths, save_scaler: bool = True
) -> Prepared:
    """Load and validate ``dataset`` from ``paths.datasets`` and build its arrays from ``cfg``.

    ``threshold_delta = auto`` (None) lets :func:`pipeline.features.prepare_arrays` pick the
    threshold that balances the classes on the training block; ``purge_gap = auto`` (None) uses the
    minimum ``smoothing_k + lookback``. With ``save_scaler`` the scaler (fit on the train block's
    rows only) is pickled atomically to ``scalers/scaler_{name}.pkl`` (``name`` = the CSV's
    stem) with what it was fit on, so a later prediction can check it matches data and features.
    """
    df, info = load_dataset(dataset, paths.datasets)
    arrays = arrays_from_config(df, cfg)
    prepared = Prepared(info=info, df=df, arrays=arrays, feature_names=list(arrays.feature_names))
    if save_scaler:
        save_scaler_file(prepared, cfg, scaler_path(paths, info.name))
    return prepared


def scaler_payload(prepared: Prepared, cfg: TrainingConfig) -> dict[str, Any]:
    """The dict pickled into a scaler file (scaler plus what it was fit on)."""
    train = prepared.arrays.splits.train
    return {
        "scaler": prepared.arrays.scaler,
        "feature_names": list(prepared.feature_names),
        "lookback": int(cfg.lookback),
        "dataset": prepared.info.name,
        "dataset_sha256": prepared.info.sha256,
        "fitted_on": (int(train.start), int(train.stop)),
        "delta": float(prepared.arrays.delta),
    }


def save_scaler_file(prepared: Prepared, cfg: TrainingConfig, path: Path) -> Path:
    """Pickle :func:`scaler_payload` to ``path`` atomically."""
    atomic_write_bytes(path, pickle.dumps(scaler_payload(prepared, cfg)))
    log.debug("scaler saved to %s", path)
    return path


def load_scaler_file(path: Path) -> dict[str, Any]:
    """Read a scaler file written by :func:`save_scaler_file` (a locally written pickle)."""
    try:
        with open(path, "rb") as f:
            payload = pickle.load(f)
    except FileNotFoundError:
        raise PipelineError(f"{path}: scaler file not found; run train_models.py first") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise PipelineError(f"{path}: unreadable scaler file ({exc})") from None
    if not isinstance(payload, dict) or "scaler" not in payload:
        raise PipelineError(f"{path}: not a scaler file (expected a dict with a 'scaler' key)")
    return payload
