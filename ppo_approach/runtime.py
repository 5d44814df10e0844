"""The exported agent at work, with numpy, pandas and onnxruntime only (no torch, no SB3).

:meth:`Decider.load` reads an export folder (``export.py --dataset NAME`` writes it; its
``export.json`` is plain data: names, numbers, file hashes) and checks every file's SHA-256.
:meth:`Decider.decide` takes the candles up to the last closed one and returns a
:class:`Decision`: it computes the features from the raw candles with the training code
(:mod:`pipeline.data.features`), runs the classifier graph(s) on the last window, rounds the
probabilities as the prediction table stores them (6 significant digits: the agent was trained and
backtested on those), builds the observation as the environment does and runs the policy graph.

The Decider keeps a paper account (:class:`PaperAccount`, the environment's own accounting,
:class:`ppo_approach.env_portfolio.Account`): a decision made at candle ``t`` is filled at the
open of the next candle given to :meth:`Decider.decide`, with the backtest's fee and slippage, and
the account is marked at that candle's close, exactly as the backtest steps. Nothing here sends an
order anywhere.

Trust boundary: an export folder is data. ONNX files are graphs of tensor operations run by ONNX
Runtime; ``export.json`` is JSON; nothing in the folder is imported, unpickled or executed.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.classifiers.ensembles import combine
from pipeline.common import PipelineError
from pipeline.data.features import agent_price_features, compute_features
from ppo_approach.env_portfolio import OBS_CLIP, PORTFOLIO_NAMES, Account, action_names

EXPORT_FORMAT = "agent-export/1"
MANIFEST_NAME = "export.json"
POLICY_NAME = "policy.onnx"
BACKTEST_CURVE_NAME = "backtest.csv"
CANDLE_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
STATE_KEYS = (
    "_t",
    "_start",
    "_cash",
    "_units",
    "_entry",
    "_held",
    "_equity",
    "_peak",
    "_max_dd",
    "_steps",
    "_trades",
    "_invalid",
    "_total_fees",
)
"""The account's state, as :meth:`PaperAccount.state` saves it (Python floats and ints)."""


class DeciderError(PipelineError):
    """An export folder that cannot be used, or candles the agent cannot decide on."""


def classifier_file(model: str) -> str:
    """The file name of classifier ``model``'s graph inside an export folder."""
    return f"classifier_{model}.onnx"


def sha256_bytes(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def round_as_table(values: np.ndarray) -> np.ndarray:
    """``values`` as the prediction table stores them: 6 significant digits (``%.6g``), read
    back as float64."""
    return np.array([float(f"{float(v):.6g}") for v in np.ravel(values)]).reshape(np.shape(values))


class PaperAccount(Account):
    """The environment's account over candles that arrive one at a time: row 0 is the last
    marked candle, and :meth:`fill_and_mark` adds the next one."""

    def __init__(self, env: dict[str, Any]) -> None:
        self._set_account(
            env["initial_capital"],
            env["transaction_cost"],
            env["slippage"],
            env["allow_short"],
            env["action_set"],
            env["episode_length"],
        )
        self._open: list[float] = []
        self._close: list[float] = []
        self._reset_portfolio(0)

    def start(self, open_: float, close: float) -> None:
        """The first candle: flat, all cash, marked at its close."""
        self._open, self._close = [float(open_)], [float(close)]
        self._reset_portfolio(0)

    def fill_and_mark(self, action: int, open_: float, close: float) -> tuple[int, bool, float]:
        """Fill ``action`` (decided at the last candle) at ``open_`` and mark at ``close``:
        one environment step; returns ``(order, valid, fee)``."""
        self._open = [self._open[-1], float(open_)]
        self._close = [self._close[-1], float(close)]
        self._t = 0
        out = self._advance(action)
        self._open, self._close, self._t = self._open[1:], self._close[1:], 0
        return out

    @property
    def equity(self) -> float:
        return self._equity

    @property
    def units(self) -> float:
        return self._units

    @property
    def cash(self) -> float:
        return self._cash

    def exposure(self) -> float:
        """Signed ``units * close / equity`` at the last close."""
        return self._units * self._close[-1] / max(self._equity, 1e-12) if self._close else 0.0

    def state(self) -> dict[str, Any]:
        """The account as JSON-ready numbers (with the last candle's open and close)."""
        out = {k: getattr(self, k) for k in STATE_KEYS}
        out["last_open"] = self._open[-1] if self._open else None
        out["last_close"] = self._close[-1] if self._close else None
        return out

    def restore(self, state: dict[str, Any]) -> None:
        """The account as :meth:`state` saved it."""
        for k in STATE_KEYS:
            setattr(self, k, state[k])
        self._open = [] if state["last_open"] is None else [float(state["last_open"])]
        self._close = [] if state["last_close"] is None else [float(state["last_close"])]


@dataclass(frozen=True)
class Decision:
    """What the agent decided at the close of one candle (nothing is sent anywhere)."""

    timestamp: pd.Timestamp
    action: int
    """Index into the export's action table (``action_names``)."""
    action_name: str
    target_position: float
    """The exposure (signed position value / equity) the account holds once this decision is
    filled, if it filled at this candle's close (the fill happens at the next candle's open)."""
    probabilities: np.ndarray
    """``(3,)`` p_fall, p_stationary, p_rise as the agent saw them (6 significant digits)."""
    features: dict[str, float] = field(default_factory=dict)
    """The observation by name (after scaling and clipping, as the policy saw it)."""


def onnx_session(path: Path) -> Any:
    """An ONNX Runtime session of ``path`` on the CPU; one error line for an unusable file."""
    try:
        import onnxruntime
    except ImportError:
        raise DeciderError("onnxruntime is not installed (pip install onnxruntime)") from None
    try:
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # any unreadable or invalid file: one line naming it
        raise DeciderError(f"{path}: not a runnable ONNX graph ({type(exc).__name__})") from None


def masked_argmax(logits: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The deterministic action of each row: the argmax of its logits ``(B, n_actions)``,
    invalid actions (``mask`` false) excluded as sb3-contrib's masked distribution excludes
    them. ``(B,)`` int."""
    scores = np.asarray(logits, dtype=np.float64).copy()  # (B, n_actions)
    if mask is not None:
        scores[~np.asarray(mask, dtype=bool)] = -np.inf
    return np.argmax(scores, axis=1)


def read_manifest(folder: Path) -> dict[str, Any]:
    """``export.json`` of ``folder``, with every file it lists checked against its SHA-256."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeciderError(f"{path}: not found; write the export with export.py") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DeciderError(f"{path}: unreadable ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise DeciderError(f"{path}: expected a JSON object with format {EXPORT_FORMAT!r}")
    for name, digest in manifest["files"].items():
        file = folder / name
        if not file.is_file():
            raise DeciderError(f"{file}: listed in {MANIFEST_NAME} but missing")
        if sha256_bytes(file) != digest:
            raise DeciderError(
                f"{file}: SHA-256 differs from {MANIFEST_NAME}'s (changed after export)"
            )
    return manifest


class Decider:
    """The exported agent: classifier graph(s), policy graph and a paper account."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.manifest = manifest
        c, a = manifest["classifier"], manifest["agent"]
        self.feature_names: list[str] = list(c["feature_names"])
        self.lookback = int(c["lookback"])
        self.members: list[str] = list(c["members"])
        self.ensemble: dict[str, Any] | None = c.get("ensemble")
        self.history_bars = int(manifest["history_bars"])
        self._classifiers = {
            m: onnx_session(self.folder / classifier_file(m)) for m in self.members
        }
        self._policy = onnx_session(self.folder / POLICY_NAME)
        self.maskable = a["algorithm"] == "maskable_ppo"
        self.action_names = action_names(a["env"]["action_set"], a["env"]["allow_short"])
        self.account = PaperAccount(a["env"])
        self.pending: int | None = None
        """The action decided at the last candle, filled at the next one's open."""
        self.last_timestamp: pd.Timestamp | None = None
        self.last_fill: tuple[int, bool, float] | None = None
        """The fill ``(order, valid, fee)`` of the decision before the last one, made by the
        last :meth:`decide` (None at the first candle)."""
        self._last_decision: Decision | None = None

    @classmethod
    def load(cls, folder: str | Path) -> Decider:
        """The agent of an export folder (every file checked against its SHA-256)."""
        return cls(Path(folder), read_manifest(Path(folder)))

    # ------------------------------------------------------------------ the observation

    def probabilities(self, window: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """The (combined) probabilities ``(3,)`` of one raw feature window ``(L, F)`` and each
        member's ``(3,)``, unrounded."""
        batch = np.asarray(window, dtype=np.float32)[None]  # (1, L, F)
        members = [
            np.asarray(self._classifiers[m].run(["probabilities"], {"windows": batch})[0][0])
            for m in self.members
        ]  # each (3,) float32
        if len(members) == 1:
            return members[0], members
        if self.ensemble is None:  # the members' plain mean, in float32 as the pipeline's
            return np.stack(members).mean(axis=0), members
        stacked = np.stack([p.astype(np.float64) for p in members])[:, None, :]  # (M, 1, 3)
        return combine(stacked, self.ensemble)[0], members

    def market_features(self, candles: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The market part of the observation at the last candle ``(P + K,)`` float32 (scaled
        and clipped as in the environment), and the probabilities the agent sees ``(3,)``."""
        feats = compute_features(candles, self.feature_names)  # (N, F) float64
        window = feats.to_numpy(dtype=np.float32)[-self.lookback :]  # (L, F)
        if len(window) < self.lookback or not np.isfinite(window).all():
            raise DeciderError(
                f"{len(candles)} candles give no complete {self.lookback}-bar window of "
                f"warmed-up features; give at least {self.history_bars} candles"
            )
        probs, members = self.probabilities(window)
        pred = self._prediction_features(probs, members)  # (P,) float32
        price = agent_price_features(candles, feats)[-1]  # (K,) float32
        if not np.isfinite(price).all():
            raise DeciderError(
                f"{len(candles)} candles: the agent's price features are still warming up; give "
                f"at least {self.history_bars} candles"
            )
        a = self.manifest["agent"]
        pred = _zscore(pred, a.get("prediction_zscore"))
        price = _zscore(price, a.get("price_zscore"))
        market = np.concatenate([pred, price]).astype(np.float32)  # (P + K,)
        np.clip(market, -OBS_CLIP, OBS_CLIP, out=market)
        return market, round_as_table(np.asarray(probs, dtype=np.float64))

    def _prediction_features(self, probs: np.ndarray, members: list[np.ndarray]) -> np.ndarray:
        """``pred_class - 1, confidence, p_fall, p_stationary, p_rise`` (+ members' and the
        edge) as the prediction table gives them to the agent: 6 significant digits."""
        x = [float(np.argmax(probs)) - 1.0, *round_as_table([np.max(probs), *probs])]
        if self.manifest["agent"]["member_columns"]:
            for p in members:
                x += list(round_as_table(p))
        if self.manifest["agent"]["edge_feature"]:
            x.append(x[4] - x[2])  # p_rise - p_fall, float64 as the table's columns
        return np.asarray(x, dtype=np.float64).astype(np.float32)  # (P,)

    def observation(self, market: np.ndarray) -> np.ndarray:
        """The whole observation ``(P + K + 4,)`` float32: the market part and the account's."""
        obs = np.zeros(market.size + len(PORTFOLIO_NAMES), dtype=np.float32)
        obs[: market.size] = market
        self.account._portfolio_obs(obs, market.size)
        return obs

    # ------------------------------------------------------------------ deciding

    def policy_action(self, obs: np.ndarray) -> int:
        """The deterministic action of the policy graph (masked for MaskablePPO)."""
        (logits,) = self._policy.run(["logits"], {"obs": obs[None].astype(np.float32)})
        mask = np.asarray([self.account.action_valid_list()]) if self.maskable else None
        return int(masked_argmax(logits, mask)[0])

    def advance(self, candle: pd.Series) -> tuple[int, bool, float] | None:
        """Fill the pending decision at ``candle``'s open and mark at its close (the first
        candle only marks); returns the fill ``(order, valid, fee)`` or None."""
        if self.last_timestamp is None:
            self.account.start(float(candle["open"]), float(candle["close"]))
            return None
        return self.account.fill_and_mark(
            self.pending or 0, float(candle["open"]), float(candle["close"])
        )

    def decide(self, candles: pd.DataFrame) -> Decision:
        """The decision at the last candle of ``candles`` (time order, the last one closed).

        A candle newer than the last one seen first fills the pending decision (at its open)
        and marks the account (at its close); the same last candle again returns the same
        decision without a second fill.
        """
        frame = check_candles(candles)
        last = frame.iloc[-1]
        stamp = pd.Timestamp(last["timestamp"])
        if self.last_timestamp is not None and stamp <= self.last_timestamp:
            if stamp == self.last_timestamp and self._last_decision is not None:
                return self._last_decision
            raise DeciderError(
                f"candle {stamp} is not after the last one decided on ({self.last_timestamp})"
            )
        market, probs = self.market_features(frame)
        self.last_fill = self.advance(last)
        decision = self._decision(stamp, market, probs)
        self.pending, self.last_timestamp = decision.action, stamp
        self._last_decision = decision
        return decision

    def _decision(self, stamp: pd.Timestamp, market: np.ndarray, probs: np.ndarray) -> Decision:
        obs = self.observation(market)
        action = self.policy_action(obs)
        names = self.manifest["agent"]["observation_names"]
        after = copy.copy(self.account)
        after.fill_and_mark(action, after._close[-1], after._close[-1])
        return Decision(
            timestamp=stamp,
            action=action,
            action_name=self.action_names[action],
            target_position=float(after.exposure()),
            probabilities=probs,
            features={n: float(v) for n, v in zip(names, obs, strict=True)},
        )


def _zscore(x: np.ndarray, stats: dict[str, list[float]] | None) -> np.ndarray:
    """``(x - mean) / std`` as the agent's blocks scale (float64, then float32); ``None``: x."""
    if stats is None:
        return x
    mean = np.asarray(stats["mean"], dtype=np.float64)
    std = np.asarray(stats["std"], dtype=np.float64)
    return ((x - mean) / std).astype(np.float32)


def check_candles(candles: pd.DataFrame) -> pd.DataFrame:
    """``candles`` with the six columns, a RangeIndex and increasing timestamps; one error line
    otherwise."""
    missing = [c for c in CANDLE_COLUMNS if c not in candles.columns]
    if missing:
        raise DeciderError(
            f"candles lack column(s) {', '.join(missing)}; expected {', '.join(CANDLE_COLUMNS)}"
        )
    if len(candles) < 2:
        raise DeciderError(f"{len(candles)} candle(s); expected a history of candles")
    frame = candles.loc[:, list(CANDLE_COLUMNS)].reset_index(drop=True)
    ts = pd.to_datetime(frame["timestamp"], utc=True)
    if not ts.is_monotonic_increasing or ts.duplicated().any():
        raise DeciderError("candle timestamps are not strictly increasing")
    frame["timestamp"] = ts
    return frame
