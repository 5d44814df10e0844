"""Classifier predictors for the agent: :class:`PredictionModel` loads a trained classifier from
``models/`` (weights-only) and the scaler's numbers from ``scalers/``, checks that it belongs to
the dataset and feature list, and predicts one window or a whole dataset in batched passes;
:class:`EnsemblePredictionModel` averages several.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.classifiers.nets import count_parameters, load_model_file, model_from_payload
from pipeline.classifiers.prepare import ClassifierData, load_scaler_file
from pipeline.classifiers.windows import WindowData, predict_proba
from pipeline.common import Paths, PipelineError
from pipeline.device import resolve_device
from pipeline.store.artifacts import Artifacts

log = logging.getLogger(__name__)

PROB_COLUMNS: tuple[str, str, str] = ("p_fall", "p_stationary", "p_rise")


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return resolve_device("auto")
    return device if isinstance(device, torch.device) else resolve_device(str(device))


def _scale(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return ((np.asarray(x, dtype=np.float64) - mean) / scale).astype(np.float32)


class PredictionModel:
    """One trained classifier with its scaler, checked against the dataset's scaler file.

    The scaler file is :attr:`pipeline.store.artifacts.Artifacts.scaler` (plain data); an old
    pickled scaler (:attr:`~pipeline.store.artifacts.Artifacts.legacy_scaler`) is never loaded,
    since unpickling a shared file can run code.

    Args:
        model_name: ``lstm`` | ``gru`` | ``bilstm`` | ``dlstm``.
        dataset_name: the dataset the model was trained on (file stem).
        paths: artifact folders (default ``Paths.from_root()``).
        device: ``cpu`` / ``cuda`` / a torch.device; default CUDA when available.
        path: load this model file instead of the main one (walk-forward fold models); such
            files carry their own scaler, so the dataset's scaler file is not consulted.
    """

    def __init__(
        self,
        model_name: str,
        dataset_name: str,
        paths: Paths | None = None,
        device: str | torch.device | None = None,
        path: Path | None = None,
    ) -> None:
        self.paths = paths if paths is not None else Paths.from_root()
        self.name = model_name
        self.dataset = dataset_name
        self.device = _device(device)
        self.artifacts = Artifacts(self.paths, dataset_name)
        self.path = path if path is not None else self.artifacts.classifier_model(model_name)
        self.payload = load_model_file(self.path)
        p = self.payload
        if p["model"] != model_name:
            raise PipelineError(f"{self.path}: holds model {p['model']!r}, not {model_name!r}")
        self.feature_names: list[str] = list(p["feature_names"])
        self.lookback: int = int(p["lookback"])
        self.dataset_sha256: str = str(p["dataset_sha256"])
        self.config_hash: str = str(p["config_hash"])
        self.source: str = str(p.get("source", f"{model_name}/dev"))
        self.mean = np.asarray(p["scaler"]["mean"], dtype=np.float64)  # (F,)
        self.scale = np.asarray(p["scaler"]["scale"], dtype=np.float64)  # (F,)
        self.scaler_file: Path | None = None
        """The dataset's scaler file this model was checked against (``None``: fold models)."""
        if path is None:
            self._check_scaler_file()
            self.scaler_file = self.artifacts.scaler
        self.model = model_from_payload(p, self.device)
        self.n_parameters = count_parameters(self.model)

    def _check_scaler_file(self) -> None:
        spath = self.artifacts.scaler
        scaler_file = load_scaler_file(spath)
        if scaler_file.get("dataset_sha256") != self.dataset_sha256:
            raise PipelineError(
                f"{spath}: fit on dataset sha256 "
                f"{str(scaler_file.get('dataset_sha256'))[:12]}, but {self.path.name} was "
                f"trained on {self.dataset_sha256[:12]}; rerun train_models.py"
            )
        if list(scaler_file.get("feature_names", [])) != self.feature_names:
            raise PipelineError(
                f"{spath}: feature list differs from the one {self.path.name} was trained with; "
                "rerun train_models.py"
            )
        scaler = scaler_file["scaler"]  # rebuilt from JSON: no pickle, which could run code
        if (
            len(scaler.mean_) != len(self.mean)
            or not np.allclose(scaler.mean_, self.mean)
            or not np.allclose(scaler.scale_, self.scale)
        ):
            # The file is per dataset: a train_models.py run with other split settings (e.g. a
            # different lookback for one model) rewrites it. The model carries its own scaler, so
            # rerunning with this model's config only rewrites the file (the model is skipped).
            lookback = scaler_file.get("lookback")
            why = (
                f"written for lookback {lookback}, {self.path.name} uses {self.lookback}"
                if lookback is not None and int(lookback) != self.lookback
                else f"its statistics differ from those {self.path.name} was trained with"
            )
            raise PipelineError(
                f"{spath}: {why} (a run with another config rewrote it); rerun "
                "train_models.py with this model's config (up-to-date models are skipped)"
            )

    def check_dataset(self, prep: ClassifierData) -> None:
        """PipelineError unless ``prep`` is the dataset and feature list this model was fit on."""
        if prep.info.sha256 != self.dataset_sha256:
            raise PipelineError(
                f"{self.path.name}: trained on dataset sha256 {self.dataset_sha256[:12]}, but "
                f"{prep.info.path} has {prep.info.sha256[:12]}; rerun train_models.py"
            )
        if list(prep.feature_names) != self.feature_names:
            raise PipelineError(
                f"{self.path.name}: trained on features {', '.join(self.feature_names)}; the "
                f"config now gives {', '.join(prep.feature_names)}"
            )

    def check_finite(self, prep: ClassifierData, bars: np.ndarray) -> None:
        """PipelineError unless every warmed-up row of ``prep``'s features scales to finite
        numbers with this model's scaler and the windows ending at ``bars`` get finite
        probabilities; the message names the model (and scaler) file and the first bad row.

        A scaler with overflowing numbers (a mean of 1e308, the same in the model file and the
        scaler file) passes every other check and predicts NaN.
        """
        self.check_dataset(prep)
        where = f"{self.path}" + (f" (scaler {self.scaler_file})" if self.scaler_file else "")
        ts = prep.df["timestamp"]
        warmup = prep.arrays.warmup
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = _scale(prep.arrays.features[warmup:], self.mean, self.scale)  # (N - w, F)
        bad = ~np.isfinite(scaled)
        if bad.any():
            r, f = (int(i) for i in np.argwhere(bad)[0])
            raise PipelineError(
                f"{where}: row {warmup + r} ({ts.iloc[warmup + r]:%Y-%m-%d %H:%M}) of the dataset "
                f"scales to a non-finite value in feature {self.feature_names[f]} (mean "
                f"{self.mean[f]:.6g}, scale {self.scale[f]:.6g}); rerun train_models.py"
            )
        bars = np.asarray(bars, dtype=np.int64)
        with np.errstate(over="ignore", invalid="ignore"):
            probs = self.predict_bars(prep.arrays.features, bars)  # (n, 3)
        ok = np.isfinite(probs).all(axis=1) & (np.abs(probs.sum(axis=1) - 1.0) <= 1e-4)
        if not ok.all():
            i = int(np.argmin(ok))
            raise PipelineError(
                f"{where}: the window ending at row {bars[i]} ({ts.iloc[bars[i]]:%Y-%m-%d %H:%M}) "
                f"of the dataset predicts {probs[i].tolist()}, not probabilities; rerun "
                "train_models.py"
            )

    def predict_proba_windows(self, windows: np.ndarray, scaled: bool = False) -> np.ndarray:
        """Probabilities ``(n, 3)`` of windows ``(n, lookback, F)`` (raw features unless scaled)."""
        x = np.asarray(windows, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (self.lookback, len(self.feature_names)):
            raise PipelineError(
                f"{self.name}: windows of shape {x.shape}; expected "
                f"(n, {self.lookback}, {len(self.feature_names)})"
            )
        if not scaled:
            x = _scale(x, self.mean, self.scale)
        flat = x.reshape(-1, x.shape[2])  # (n * L, F): each window as its own rows
        bars = np.arange(1, len(x) + 1) * self.lookback - 1  # (n,) last row of each window
        data = WindowData.create(flat, bars, None, self.lookback, self.device)
        return predict_proba(self.model, data)

    def predict(self, window: np.ndarray, scaled: bool = False) -> tuple[int, float, np.ndarray]:
        """One window ``(lookback, F)`` -> ``(class, confidence, probabilities (3,))``."""
        probs = self.predict_proba_windows(np.asarray(window)[None], scaled=scaled)[0]
        cls = int(probs.argmax())
        return cls, float(probs[cls]), probs

    def predict_bars(self, features: np.ndarray, bars: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, 3)`` of the windows ending at ``bars`` of raw ``features (N, F)``."""
        scaled = _scale(features, self.mean, self.scale)  # (N, F)
        data = WindowData.create(scaled, bars, None, self.lookback, self.device)
        return predict_proba(self.model, data)

    def predict_dataset(self, prep: ClassifierData, bars: np.ndarray | None = None) -> pd.DataFrame:
        """Batched predictions for ``bars`` (default: every bar with a full, warmed-up window)."""
        self.check_dataset(prep)
        if bars is None:
            bars = np.arange(prep.arrays.splits.first_bar, prep.arrays.n_bars)
        return prediction_frame(
            prep, np.asarray(bars), self.predict_bars(prep.arrays.features, bars)
        )


class EnsemblePredictionModel:
    """The members' probabilities combined (each member scales its own input): as step 5's
    ensemble report (``results/ensemble_{dataset}.json``: weights or a stacking meta-model, JSON)
    says when it lists exactly these members, else their mean."""

    def __init__(
        self,
        dataset_name: str,
        model_names: list[str] | tuple[str, ...],
        paths: Paths | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if len(model_names) < 1:
            raise PipelineError("an ensemble needs at least one member")
        self.dataset = dataset_name
        self.members = [PredictionModel(m, dataset_name, paths, device) for m in model_names]
        first = self.members[0]
        for m in self.members[1:]:
            if m.feature_names != first.feature_names or m.lookback != first.lookback:
                raise PipelineError(
                    f"ensemble members {first.name} and {m.name} differ in features or lookback; "
                    "retrain them with the same config"
                )
        self.name = "ensemble"
        self.feature_names = first.feature_names
        self.lookback = first.lookback
        self.device = first.device
        self.n_parameters = sum(m.n_parameters for m in self.members)
        self.fit = _ensemble_fit(self.members[0].artifacts, model_names)

    def _combine(self, member_probs: list[np.ndarray]) -> np.ndarray:
        from pipeline.classifiers.ensembles import combine

        stacked = np.stack(member_probs)  # (M, n, 3)
        return stacked.mean(axis=0) if self.fit is None else combine(stacked, self.fit)

    def predict_proba_windows(self, windows: np.ndarray, scaled: bool = False) -> np.ndarray:
        """Combined member probabilities ``(n, 3)``."""
        return self._combine([m.predict_proba_windows(windows, scaled) for m in self.members])

    def predict(self, window: np.ndarray, scaled: bool = False) -> tuple[int, float, np.ndarray]:
        """One window ``(lookback, F)`` -> ``(class, confidence, probabilities (3,))``."""
        probs = self.predict_proba_windows(np.asarray(window)[None], scaled=scaled)[0]
        cls = int(probs.argmax())
        return cls, float(probs[cls]), probs

    def predict_dataset(self, prep: ClassifierData, bars: np.ndarray | None = None) -> pd.DataFrame:
        """Batched mean predictions (see :meth:`PredictionModel.predict_dataset`)."""
        frames = [m.predict_dataset(prep, bars) for m in self.members]
        probs = self._combine([f[list(PROB_COLUMNS)].to_numpy() for f in frames])
        return prediction_frame(prep, frames[0]["bar"].to_numpy(), probs)


def _ensemble_fit(art: Artifacts, members: list[str] | tuple[str, ...]) -> dict[str, Any] | None:
    """The ensemble report's combination when it is for exactly ``members`` (in order), else
    None (the mean). A report that cannot be read is an error naming the file."""
    path = art.ensemble_report
    if not path.is_file():
        return None
    try:
        fit = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path}: cannot be read ({exc}); rerun train_models.py") from None
    if not isinstance(fit, dict) or list(fit.get("members", [])) != list(members):
        return None
    return fit


def prediction_frame(prep: ClassifierData, bars: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """``bar, timestamp, p_fall, p_stationary, p_rise, pred_class, confidence``."""
    ts = prep.df["timestamp"].iloc[bars].dt.strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy()
    return pd.DataFrame(
        {
            "bar": bars.astype(np.int64),
            "timestamp": ts,
            "p_fall": probs[:, 0],
            "p_stationary": probs[:, 1],
            "p_rise": probs[:, 2],
            "pred_class": probs.argmax(axis=1).astype(np.int64),
            "confidence": probs.max(axis=1),
        }
    )
