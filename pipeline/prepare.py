"""Load a dataset and turn it into model-ready arrays, with the train-only scaler saved beside it.

Steps 5 (classifiers) and 7 (PPO agent) both start here, so the two see the very same features,
labels, splits and scaler for a dataset.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from pipeline.artifacts import Artifacts
from pipeline.common import Paths, PipelineError, atomic_write_text
from pipeline.config_schema import TrainingConfig
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
    rows only) is written atomically as JSON to the dataset's
    :attr:`pipeline.artifacts.Artifacts.scaler` with what it was fit on, so a later prediction can
    check it matches data and features.
    """
    df, info = load_dataset(dataset, paths.datasets)
    arrays = arrays_from_config(df, cfg)
    prepared = Prepared(info=info, df=df, arrays=arrays, feature_names=list(arrays.feature_names))
    if save_scaler:
        save_scaler_file(prepared, cfg, Artifacts(paths, info.name).scaler)
    return prepared


SCALER_FORMAT = "pipeline-standard-scaler"
SCALER_VERSION = 1


def scaler_payload(prepared: Prepared, cfg: TrainingConfig) -> dict[str, Any]:
    """The JSON-ready dict of a scaler file: its statistics plus what it was fit on.

    Plain numbers and strings only: the file is shared through the git remote (step 8), so it
    must be data that loading cannot turn into code, unlike the pickle it replaces (issue 8
    item 7). JSON floats round-trip exactly (``repr``), so the rebuilt scaler equals the fit one.
    """
    train = prepared.arrays.splits.train
    scaler = prepared.arrays.scaler
    return {
        "format": SCALER_FORMAT,
        "version": SCALER_VERSION,
        "dataset": prepared.info.name,
        "dataset_sha256": prepared.info.sha256,
        "feature_names": list(prepared.feature_names),
        "lookback": int(cfg.lookback),
        "fitted_on": [int(train.start), int(train.stop)],
        "delta": float(prepared.arrays.delta),
        "n_samples": int(scaler.n_samples_seen_),
        "mean": [float(v) for v in scaler.mean_],
        "scale": [float(v) for v in scaler.scale_],
        "var": [float(v) for v in scaler.var_],
    }


def save_scaler_file(prepared: Prepared, cfg: TrainingConfig, path: Path) -> Path:
    """Write :func:`scaler_payload` to ``path`` as JSON, atomically."""
    text = json.dumps(scaler_payload(prepared, cfg), indent=2, allow_nan=False) + "\n"
    atomic_write_text(path, text)
    log.debug("scaler saved to %s", path)
    return path


def _bad(path: Path, what: str) -> PipelineError:
    return PipelineError(f"{path}: not a valid scaler file ({what}); rerun train_models.py")


def _floats(path: Path, data: dict[str, Any], key: str, n: int) -> np.ndarray:
    """``data[key]`` as ``n`` finite floats, or a PipelineError naming the file and key."""
    value = data.get(key)
    if not isinstance(value, list) or len(value) != n:
        raise _bad(path, f"'{key}' must be a list of {n} numbers, one per feature")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise _bad(path, f"'{key}' must hold numbers only")
    arr = np.asarray(value, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise _bad(path, f"'{key}' holds a non-finite value")
    return arr


def _int(path: Path, data: dict[str, Any], key: str, minimum: int) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _bad(path, f"'{key}' must be an integer >= {minimum}, got {value!r}")
    return value


def load_scaler_file(path: Path) -> dict[str, Any]:
    """Read and check a scaler file written by :func:`save_scaler_file`.

    Returns its fields plus ``"scaler"``: a :class:`StandardScaler` rebuilt from the stored
    statistics (no pickle is ever read; an old ``scaler_*.pkl`` beside it is ignored, and when
    it is all there is, the error says to rerun train_models.py: issue 8 item 7).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        legacy = path.with_suffix(".pkl")
        if legacy.exists():
            raise PipelineError(
                f"{path}: scaler file not found; {legacy.name} beside it is an old pickled "
                "scaler, which is never loaded (unpickling a shared file can run code); rerun "
                f"train_models.py to write {path.name}"
            ) from None
        raise PipelineError(f"{path}: scaler file not found; run train_models.py first") from None
    except (UnicodeDecodeError, IsADirectoryError) as exc:
        raise _bad(path, f"unreadable: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad(path, f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != SCALER_FORMAT:
        raise _bad(path, f'expected a JSON object with "format": "{SCALER_FORMAT}"')
    if data.get("version") != SCALER_VERSION:
        raise _bad(path, f"version {data.get('version')!r}, this code reads {SCALER_VERSION}")
    names = data.get("feature_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise _bad(path, "'feature_names' must be a non-empty list of strings")
    for key in ("dataset", "dataset_sha256"):
        if not isinstance(data.get(key), str):
            raise _bad(path, f"'{key}' must be a string")
    n = len(names)
    mean = _floats(path, data, "mean", n)
    scale = _floats(path, data, "scale", n)
    var = _floats(path, data, "var", n)
    if (scale <= 0).any():
        raise _bad(path, "'scale' must be > 0")
    n_samples = _int(path, data, "n_samples", 1)
    _int(path, data, "lookback", 1)
    fitted = data.get("fitted_on")
    if (
        not isinstance(fitted, list)
        or len(fitted) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in fitted)
    ):
        raise _bad(path, "'fitted_on' must be [start, stop] bar indices")
    scaler = StandardScaler()
    scaler.mean_ = mean
    scaler.scale_ = scale
    scaler.var_ = var
    scaler.n_samples_seen_ = n_samples
    scaler.n_features_in_ = n
    return {**data, "fitted_on": (fitted[0], fitted[1]), "scaler": scaler}
