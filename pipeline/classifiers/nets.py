"""The classifiers (LSTM, GRU, BiLSTM, DLSTM, the logistic regressions, LightGBM) and their
model-file format.

Every model maps a window of scaled features ``(B, L, F)`` to three logits for Fall / Stationary /
Rise. A model file (``torch.save`` of a plain dict, read back with ``weights_only=True``) carries
everything needed to rebuild the net and use it: architecture, weights, feature names, lookback,
label settings, the scaler's numbers and the dataset's sha256. Written by ``train_models.py``,
read by the predictors (:mod:`pipeline.classifiers.predictors`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.classifiers.metrics import N_CLASSES
from pipeline.common import PipelineError, atomic_path
from pipeline.config.registry import architecture
from pipeline.config.schema import MODEL_NAMES, TrainingConfig


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


class LogRegClassifier(nn.Module):
    """Multinomial logistic regression on a summary of the window.

    ``(B, L, F)`` -> the last bar's features and their mean over the window ``(B, 2F)`` -> 3
    logits. scikit-learn fits it (``pipeline.classifiers.tabular.fit_logreg``, L2, balanced class
    weights); its coefficients live in ``linear``, so it predicts, saves (weights only) and loads
    like the networks: ``softmax(linear(x))`` is sklearn's ``predict_proba``.
    """

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * n_features, N_CLASSES)

    @staticmethod
    def summary(x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L, F) -> (B, 2F): last bar, then the window's mean."""
        return torch.cat([x[:, -1, :], x.mean(dim=1)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L, F) -> logits (B, 3)."""
        return self.linear(self.summary(x))


class WindowLogRegClassifier(nn.Module):
    """Multinomial logistic regression on every bar of the window (``window_logreg``).

    ``(B, L, F)`` -> the per-bar ``columns`` of each of the last ``lookback`` bars, flattened
    ``(B, lookback * F')`` -> 3 logits: one weight per feature and lag, the lag-specific linear
    model a recurrent network has to learn to count (the one-layer linear model over the lookback
    of Zeng et al. 2023). scikit-learn fits it (``pipeline.classifiers.tabular.fit_window_logreg``);
    its coefficients live in ``linear``, in the order of ``x.reshape(B, -1)``.
    """

    def __init__(self, n_features: int, lookback: int, input_columns: list[int]) -> None:
        super().__init__()
        self.n_features = int(n_features)
        self.lookback = int(lookback)
        self.columns: torch.Tensor
        self.register_buffer("columns", torch.as_tensor(input_columns, dtype=torch.long))
        self.linear = nn.Linear(self.lookback * len(input_columns), N_CLASSES)

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L, F) -> (B, lookback * F'): the last ``lookback`` bars' per-bar columns."""
        if x.shape[1] < self.lookback:
            raise PipelineError(
                f"window_logreg reads {self.lookback} bars; the window has {x.shape[1]}"
            )
        last = x[:, x.shape[1] - self.lookback :].index_select(2, self.columns)  # (B, lookback, F')
        return last.reshape(x.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L, F) -> logits (B, 3)."""
        return self.linear(self.flat(x))


class BoosterClassifier(nn.Module):
    """LightGBM's gradient-boosted trees on a summary of the window.

    ``(B, L, F)`` -> the last bar, the window's mean and its standard deviation ``(B, 3F)`` ->
    the booster's class probabilities, returned as log-probabilities (so the softmax every
    predictor applies gives them back). The booster is kept in LightGBM's own text format
    (``model_text``, stored in the model file as a string: data, no pickle). It has no torch
    parameters; it predicts on the CPU whatever the device of ``x``.
    """

    def __init__(self, model_text: str) -> None:
        super().__init__()
        import lightgbm

        self.model_text = model_text
        self.booster = lightgbm.Booster(model_str=model_text)

    @staticmethod
    def summary(x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L, F) -> (B, 3F): last bar, the window's mean and standard deviation."""
        x = x.float()
        return torch.cat([x[:, -1, :], x.mean(dim=1), x.std(dim=1, unbiased=False)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L, F) -> log-probabilities (B, 3)."""
        feats = self.summary(x).cpu().numpy()  # (B, 3F)
        p = torch.as_tensor(self.booster.predict(feats), dtype=torch.float32)  # (B, 3)
        return torch.log(p.clamp_min(1e-12)).to(x.device)


def arch_config(model: str, n_features: int, cfg: TrainingConfig) -> dict[str, Any]:
    """Everything needed to rebuild ``model``: name, input width, its sizes from ``cfg`` (the
    registry's settings of ``model``) and, for a network with ``network_features`` set, the input
    columns it reads."""
    arch = {"name": model, "n_features": int(n_features), **cfg.model_params(model)}
    columns = cfg.network_columns() if architecture(model).is_network else None
    if columns is not None:
        arch["input_columns"] = columns
    if cfg.network_wide and architecture(model).is_network:
        arch["wide"] = True
    if model == "window_logreg":
        from pipeline.data.features import per_bar_columns

        arch["lookback"] = int(cfg.lookback)
        arch["input_columns"] = per_bar_columns(cfg.resolved_features())
    return arch


class WideAndDeep(nn.Module):
    """Wide and deep (Cheng et al. 2016, ``network_wide``): the network's logits plus a linear
    model on :meth:`LogRegClassifier.summary` of every feature, trained together, so the network
    starts from what logreg sees and its recurrent part only has to add what that misses."""

    def __init__(self, deep: nn.Module, n_features: int) -> None:
        super().__init__()
        self.deep = deep
        self.wide = nn.Linear(2 * n_features, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, F) -> (B, 3)
        return self.deep(x) + self.wide(LogRegClassifier.summary(x))


class ColumnSelect(nn.Module):
    """A network that reads only some input columns (``network_features``): the windows keep
    every feature (one scaler, one table for all models), the network sees ``columns``."""

    def __init__(self, net: nn.Module, columns: list[int]) -> None:
        super().__init__()
        self.net = net
        self.columns: torch.Tensor
        self.register_buffer("columns", torch.as_tensor(columns, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, F) -> (B, 3)
        return self.net(x.index_select(2, self.columns))  # (B, T, F') -> (B, 3)


def _sizes(arch: dict[str, Any]) -> dict[str, Any]:
    """The input width and the registry's settings of ``arch["name"]``, each cast to its type:
    the keyword arguments of the network's constructor (a model file's extra keys are ignored)."""
    spec = architecture(str(arch["name"]))
    sizes = {s.key: s.value_type(arch[s.key]) for s in spec.settings}
    return {"n_features": int(arch["n_features"]), **sizes}


def _build_lightgbm(arch: dict[str, Any]) -> nn.Module:
    raise PipelineError(
        "a LightGBM model is fit by pipeline.classifiers.tabular.fit_lightgbm, not built"
    )


BUILDERS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "lstm": lambda arch: RNNClassifier(**_sizes(arch), cell="lstm"),
    "gru": lambda arch: RNNClassifier(**_sizes(arch), cell="gru"),
    "bilstm": lambda arch: RNNClassifier(**_sizes(arch), cell="lstm", bidirectional=True),
    "dlstm": lambda arch: DLSTMClassifier(**_sizes(arch)),
    # sklearn fits it; its settings (C) are not the module's, only the input width is
    "logreg": lambda arch: LogRegClassifier(int(arch["n_features"])),
    "window_logreg": lambda arch: WindowLogRegClassifier(
        int(arch["n_features"]), int(arch["lookback"]), [int(c) for c in arch["input_columns"]]
    ),
    "lightgbm": _build_lightgbm,
}
"""The ``nn.Module`` builder of every architecture of :mod:`pipeline.config.registry`, from the
arch dict of :func:`arch_config`; checked against the registry at import."""

if set(BUILDERS) != set(MODEL_NAMES):
    # A registered architecture without a builder (or a builder for an unregistered name) would
    # only fail when step 5 reaches it, hours into a run: fail at import instead.
    raise ImportError(
        "pipeline.classifiers.nets.BUILDERS does not match pipeline.config.registry: builders for "
        f"{sorted(BUILDERS)}, architectures {sorted(MODEL_NAMES)}"
    )


def build_classifier(arch: dict[str, Any]) -> nn.Module:
    """Instantiate the classifier described by :func:`arch_config`."""
    name = arch.get("name")
    if name not in MODEL_NAMES:
        raise PipelineError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    if arch.get("wide") and architecture(name).is_network:
        deep = build_classifier({k: v for k, v in arch.items() if k != "wide"})
        return WideAndDeep(deep, int(arch["n_features"]))
    columns = arch.get("input_columns")
    if columns is not None and architecture(name).is_network:
        inner = build_classifier(
            {k: v for k, v in arch.items() if k != "input_columns"} | {"n_features": len(columns)}
        )
        return ColumnSelect(inner, [int(c) for c in columns])
    return BUILDERS[name](arch)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------- model files

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
    if payload["arch"].get("name") == "lightgbm":
        if not isinstance(payload.get("booster"), str):
            raise PipelineError(f"model {payload['model']!r}: the file holds no LightGBM booster")
        return BoosterClassifier(payload["booster"]).eval()
    model = build_classifier(payload["arch"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise PipelineError(
            f"model {payload['model']!r}: weights do not fit its architecture ({exc})"
        ) from None
    return model.to(device).eval()
