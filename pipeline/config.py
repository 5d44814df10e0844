"""Typed configuration shared by every step, read from plain ``key = value`` text files.

``training_config.txt`` and ``ppo_approach/ppo_config.txt`` are read into
:class:`TrainingConfig` and :class:`PPOConfig`.
Precedence: dataclass defaults < file < ``--preset NAME`` < ``--set key=value``.
Like nanoGPT's configurator, unknown keys are rejected, but here with the file, line and a "did you
mean" suggestion, and every value is parsed with the field's type and checked against its range.

File format::

    # comment
    [section]            # optional, only for reading at a glance; keys are flat
    lookback = 60        # inline comments are fine
    threshold_delta = auto
    net_arch = 1280, 640
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.common import PROJECT_ROOT, PipelineError, atomic_write_text, sha256_json

TRAINING_CONFIG_PATH = PROJECT_ROOT / "training_config.txt"
PPO_CONFIG_PATH = PROJECT_ROOT / "ppo_approach" / "ppo_config.txt"

MODEL_NAMES = ("lstm", "gru", "bilstm", "dlstm")
"""Classifier architectures, in the order the seed document lists them."""


class ConfigError(PipelineError):
    """A config file, preset or ``--set`` override is wrong; the message says where and why."""


def _f(default: Any, doc: str, group: str = "", **checks: Any) -> Any:
    """A dataclass field with its doc line, group and checks (min, max, gt, lt, choices)."""
    meta = {"doc": doc, "group": group, **checks}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for sequence defaults")
    return field(default=default, metadata=meta)


# ================================================================ training_config.txt


@dataclass
class TrainingConfig:
    """Data, features, labels, splits, classifier sizes, training loop (training_config.txt)."""

    # --- data and features
    features: tuple[str, ...] = _f(
        ("default",),
        "feature names, or 'default' for the 26 documented in docs/features.md",
        "data",
    )
    lookback: int = _f(
        60, "bars per input window (the model sees lookback x features)", "data", min=2
    )
    # --- labels (Ntakaris et al. 2018): r(t) = mean(close[t+1..t+k]) / close(t) - 1
    smoothing_k: int = _f(5, "label horizon k: bars averaged after t", "data", min=1)
    threshold_delta: float | None = _f(
        None,
        "class threshold on r(t); 'auto' = balanced classes on the training block",
        "data",
        gt=0,
    )
    # --- chronological splits
    test_fraction: float = _f(
        0.2, "final test block: last fraction of usable bars", "data", gt=0, lt=1
    )
    val_fraction: float = _f(
        0.2, "classifier validation: last fraction of the development block", "data", gt=0, lt=1
    )
    purge_gap: int | None = _f(
        None,
        "bars dropped between blocks; 'auto' = smoothing_k + lookback (the minimum)",
        "data",
        min=0,
    )
    walk_forward_folds: int = _f(
        4, "folds over the development block for out-of-sample agent predictions", "data", min=3
    )
    # --- model sizes
    lstm_units: int = _f(256, "LSTM hidden units", "model", min=1)
    lstm_layers: int = _f(3, "LSTM stacked layers", "model", min=1)
    lstm_dropout: float = _f(
        0.2, "LSTM dropout between layers and before the head", "model", min=0, lt=1
    )
    gru_units: int = _f(128, "GRU hidden units", "model", min=1)
    gru_layers: int = _f(2, "GRU stacked layers", "model", min=1)
    gru_dropout: float = _f(0.2, "GRU dropout", "model", min=0, lt=1)
    bilstm_units: int = _f(128, "BiLSTM hidden units per direction", "model", min=1)
    bilstm_layers: int = _f(2, "BiLSTM stacked layers", "model", min=1)
    bilstm_dropout: float = _f(0.2, "BiLSTM dropout", "model", min=0, lt=1)
    dlstm_units: int = _f(
        128, "DLSTM hidden units of each branch (trend, remainder)", "model", min=1
    )
    dlstm_layers: int = _f(2, "DLSTM stacked layers of each branch", "model", min=1)
    dlstm_dropout: float = _f(0.2, "DLSTM dropout", "model", min=0, lt=1)
    dlstm_kernel: int = _f(
        25, "DLSTM moving-average window of the trend (Autoformer / DLinear use 25)", "model", min=1
    )
    # --- training loop
    batch_size: int = _f(1024, "batch size (auto-adjusted to GPU memory on CUDA)", "train", min=1)
    epochs: int = _f(150, "maximum epochs (early stopping usually ends sooner)", "train", min=1)
    patience: int = _f(
        15, "early stopping: epochs without validation-loss improvement", "train", min=1
    )
    learning_rate: float = _f(1e-3, "Adam learning rate", "train", gt=0, max=1)
    weight_decay: float = _f(0.0, "Adam weight decay", "train", min=0)
    grad_clip: float = _f(1.0, "gradient clipping max norm (0 = off)", "train", min=0)
    amp: bool = _f(
        True, "mixed precision on CUDA (bf16 if supported, else fp16 + GradScaler)", "train"
    )
    seed: int = _f(42, "seed for torch, numpy and the data order", "train", min=0)
    device: str = _f("auto", "auto | cpu | cuda", "run", choices=("auto", "cpu", "cuda"))
    num_threads: int = _f(0, "CPU threads for torch; 0 = number of physical cores", "run", min=0)
    # --- preflight and push (runpod_main.py, runpod_github.py)
    min_disk_gb: float = _f(
        10.0, "preflight: free disk needed where artifacts go (GB)", "run", min=0
    )
    min_memory_gb: float = _f(8.0, "preflight: memory needed (GB)", "run", min=0)
    git_remote: str = _f("origin", "push: git remote name", "run")
    git_branch: str = _f("main", "push: branch to push", "run")
    push_max_file_mb: float = _f(100.0, "push: per-file size limit of the host (MB)", "run", gt=0)

    def resolved_features(self) -> list[str]:
        """The feature names, with ``default`` expanded to the documented default list."""
        if tuple(self.features) == ("default",):
            from pipeline.features import DEFAULT_FEATURES

            return list(DEFAULT_FEATURES)
        return list(self.features)

    def model_params(self, model: str) -> dict[str, Any]:
        """Architecture parameters of one classifier (``units``, ``layers``, ``dropout``, ...)."""
        if model not in MODEL_NAMES:
            raise ConfigError(f"unknown model {model!r}; expected one of {', '.join(MODEL_NAMES)}")
        prefix = f"{model}_"
        return {
            f.name[len(prefix) :]: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name.startswith(prefix)
        }

    def hash_for_model(self, model: str) -> str:
        """Hash of every setting that changes what ``model`` learns (data, training, its own sizes).

        Other models' sizes, the device and the run settings are left out, so changing ``gru_units``
        does not retrain the LSTM.
        """
        prefix = f"{model}_"
        relevant = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.metadata["group"] in ("data", "train")
            or (f.metadata["group"] == "model" and f.name.startswith(prefix))
        }
        relevant["features"] = self.resolved_features()
        relevant["model"] = model
        return sha256_json(relevant)[:16]


# ================================================================ ppo_config.txt


@dataclass
class PPOConfig:
    """Prediction source, PPO hyperparameters, environment, reward (ppo_config.txt)."""

    # --- which classifier feeds the agent
    prediction_model: str = _f(
        "dlstm",
        "lstm | gru | bilstm | dlstm | ensemble",
        "model",
        choices=(*MODEL_NAMES, "ensemble"),
    )
    ensemble_models: tuple[str, ...] = _f(
        ("dlstm", "bilstm"),
        "members when prediction_model = ensemble",
        "model",
        each_choice=MODEL_NAMES,
    )
    ppo_prediction_source: str = _f(
        "walk_forward",
        "walk_forward: agent bars predicted by models never trained on them; in_sample: flagged",
        "model",
        choices=("walk_forward", "in_sample"),
    )
    # --- PPO (Schulman et al. 2017), SB3 meanings
    total_timesteps: int = _f(150_000, "environment steps to train for", "ppo", min=1)
    n_steps: int = _f(1024, "rollout steps per environment per update (SB3 meaning)", "ppo", min=1)
    batch_size: int = _f(2048, "minibatch size of the PPO update", "ppo", min=2)
    n_epochs: int = _f(20, "passes over each rollout", "ppo", min=1)
    learning_rate: float = _f(3e-4, "Adam learning rate", "ppo", gt=0, max=1)
    gamma: float = _f(0.99, "discount factor", "ppo", gt=0, max=1)
    gae_lambda: float = _f(0.95, "GAE lambda (Schulman et al. 2016)", "ppo", min=0, max=1)
    clip_range: float = _f(0.2, "PPO clipping epsilon", "ppo", gt=0)
    ent_coef: float = _f(0.01, "entropy bonus coefficient", "ppo", min=0)
    vf_coef: float = _f(0.5, "value loss coefficient", "ppo", min=0)
    max_grad_norm: float = _f(0.5, "gradient clipping max norm", "ppo", gt=0)
    net_arch: tuple[int, ...] = _f(
        (1280, 640), "hidden layers of the separate policy and value networks", "ppo", each_min=1
    )
    n_envs: int = _f(16, "parallel environments", "ppo", min=1)
    # dummy by default: one env step costs ~4 us, far below a SubprocVecEnv round trip, so the
    # in-process vector env is faster here (BENCHMARKS.md, PPO section).
    vec_env: str = _f(
        "dummy",
        "subproc | dummy (dummy is faster for this env)",
        "ppo",
        choices=("subproc", "dummy"),
    )
    device: str = _f("auto", "auto | cpu | cuda", "ppo", choices=("auto", "cpu", "cuda"))
    seed: int = _f(42, "seed of PPO and the environments", "ppo", min=0)
    # --- callbacks
    checkpoint_freq: int = _f(25_000, "checkpoint every this many timesteps", "callbacks", min=1)
    keep_checkpoints: int = _f(
        3,
        "checkpoints kept per run (the newest; the best model is kept besides)",
        "callbacks",
        min=1,
    )
    eval_freq: int = _f(
        5_000, "evaluate on the validation block every this many timesteps", "callbacks", min=1
    )
    eval_episodes: int = _f(5, "episodes per evaluation", "callbacks", min=1)
    # --- environment
    initial_capital: float = _f(10_000.0, "starting cash", "env", gt=0)
    transaction_cost: float = _f(
        0.001, "fee per side as a fraction of traded notional", "env", min=0, lt=1
    )
    slippage: float = _f(
        0.0, "adverse fill slippage as a fraction of the open price", "env", min=0, lt=1
    )
    allow_short: bool = _f(False, "allow short positions", "env")
    episode_length: int = _f(
        1000, "steps per training episode; 0 = to the block's end", "env", min=0
    )
    ruin_threshold: float = _f(
        0.5, "episode ends when equity < this x initial capital", "env", min=0, lt=1
    )
    # --- reward (reward_functions.py)
    profit_scale: float = _f(100.0, "profit term: step return of equity x this", "reward", min=0)
    cost_weight: float = _f(1.0, "transaction-cost penalty weight", "reward", min=0)
    drawdown_weight: float = _f(1.0, "penalty weight on increases of drawdown", "reward", min=0)
    sharpe_weight: float = _f(0.1, "differential Sharpe ratio bonus weight", "reward", min=0)
    sharpe_eta: float = _f(
        0.01, "adaptation rate of the differential Sharpe ratio", "reward", gt=0, lt=1
    )
    reward_clip: float = _f(10.0, "the summed reward is clipped to [-x, x]", "reward", gt=0)
    # --- backtest report
    random_policy_seeds: int = _f(
        5, "seeds averaged for the random-policy baseline", "backtest", min=1
    )


@dataclass
class Config:
    """Both config files, resolved."""

    training: TrainingConfig = field(default_factory=TrainingConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    sources: dict[str, str] = field(default_factory=dict)
    """Where each non-default value came from (``file:line``, ``preset smoke``, ``--set``)."""

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{"training": {...}, "ppo": {...}}`` with JSON-able values."""
        return {
            "training": {k: _jsonable(v) for k, v in dataclasses.asdict(self.training).items()},
            "ppo": {k: _jsonable(v) for k, v in dataclasses.asdict(self.ppo).items()},
        }

    def hash(self) -> str:
        """Hash of the whole resolved config."""
        return sha256_json(self.to_dict())[:16]


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


SECTIONS: dict[str, type] = {"training": TrainingConfig, "ppo": PPOConfig}
FILE_OF_SECTION = {"training": "training_config.txt", "ppo": "ppo_config.txt"}


# ================================================================ presets

PRESETS: dict[str, dict[str, dict[str, str]]] = {
    # Tiny everything: for tests and a first look on a laptop CPU (a minute or two).
    "smoke": {
        "training": {
            "lookback": "16",
            "lstm_units": "16",
            "lstm_layers": "1",
            "gru_units": "16",
            "gru_layers": "1",
            "bilstm_units": "8",
            "bilstm_layers": "1",
            "dlstm_units": "8",
            "dlstm_layers": "1",
            "dlstm_kernel": "5",
            "batch_size": "256",
            "epochs": "2",
            "patience": "2",
            "walk_forward_folds": "3",
        },
        "ppo": {
            "total_timesteps": "2048",
            "n_steps": "256",
            "batch_size": "256",
            "n_epochs": "2",
            "net_arch": "64, 64",
            "n_envs": "2",
            "vec_env": "dummy",
            "checkpoint_freq": "1024",
            "eval_freq": "1024",
            "eval_episodes": "2",
            "episode_length": "200",
            "random_policy_seeds": "3",
        },
    },
    # The README's demo: the whole pipeline on the bundled dataset in < 15 minutes on 2 CPU cores.
    "demo": {
        "training": {
            "lookback": "32",
            "lstm_units": "48",
            "lstm_layers": "1",
            "gru_units": "48",
            "gru_layers": "1",
            "bilstm_units": "32",
            "bilstm_layers": "1",
            "dlstm_units": "32",
            "dlstm_layers": "1",
            "dlstm_kernel": "9",
            "batch_size": "512",
            "epochs": "15",
            "patience": "4",
        },
        "ppo": {
            "total_timesteps": "100000",
            "n_steps": "1024",
            "batch_size": "1024",
            "n_epochs": "10",
            "net_arch": "256, 256",
            "n_envs": "8",
            "vec_env": "dummy",
            "checkpoint_freq": "25000",
            "eval_freq": "20000",
            "eval_episodes": "3",
            "episode_length": "1000",
        },
    },
}


# ================================================================ parsing


def _field_map(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _suggest(key: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def parse_value(cls: type, key: str, text: str) -> Any:
    """Parse ``text`` as the type of ``cls.key`` and check its range; ValueError if not."""
    f = _field_map(cls)[key]
    hint = _hints(cls)[key]
    raw = text.strip()
    optional = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = True, args[0]
    if optional and raw.lower() in ("auto", "none", ""):
        return None
    if raw == "":
        raise ValueError("is empty")
    if typing.get_origin(hint) is tuple:
        (item_type, _ellipsis) = typing.get_args(hint)
        items = [s.strip() for s in raw.split(",")]
        if any(s == "" for s in items):
            raise ValueError(f"{raw!r} has an empty item; expected a comma-separated list")
        value: Any = tuple(_parse_scalar(item_type, s) for s in items)
    else:
        value = _parse_scalar(hint, raw)
    _check(f, value)
    return value


def _parse_scalar(typ: type, raw: str) -> Any:
    if typ is bool:
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"{raw!r} is not a boolean; expected true or false")
    if typ is int:
        try:
            return int(raw.replace("_", ""))
        except ValueError:
            try:
                as_float = float(raw)
            except ValueError:
                as_float = None
            if as_float is not None and as_float.is_integer():
                return int(as_float)
            raise ValueError(f"{raw!r} is not an integer") from None
    if typ is float:
        try:
            return float(raw.replace("_", ""))
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
    return raw


MAX_INT = 2**31 - 1
"""Largest integer any key accepts: counts, sizes and seeds reach torch, numpy and SB3 as C ints
(issue 8 item 3: ``total_timesteps = 1e30`` parsed as a 31-digit integer and was accepted)."""

MAX_FLOAT = 1e15
"""Largest magnitude any float key accepts; beyond it money, sizes and rates are typos."""


def _show(v: Any) -> str:
    """A number for an error message: ``1e+30`` rather than the 31 digits of ``int(1e30)``."""
    if isinstance(v, int) and abs(v) > MAX_INT:
        return f"{v:.3g}"
    return str(v)


def _expected_range(m: Mapping[str, Any]) -> str:
    """The range a field accepts, e.g. ``> 0 and <= 1`` (empty when it has no bounds)."""
    parts = [
        f"{op} {m[key]}"
        for key, op in (("min", ">="), ("each_min", ">="), ("gt", ">"), ("max", "<="), ("lt", "<"))
        if key in m
    ]
    return " and ".join(parts)


def _check(f: dataclasses.Field[Any], value: Any) -> None:
    m = f.metadata
    if value is None:
        return
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if isinstance(v, bool) or isinstance(v, str):
            continue
        # NaN compares False with everything, so it would pass every range check below and
        # crash (or delete checkpoints) hours later; inf is as useless (issue 8 item 3).
        if isinstance(v, float) and not math.isfinite(v):
            bounds = _expected_range(m)
            raise ValueError(
                f"{v} is not a finite number; expected " + (bounds if bounds else "a finite number")
            )
        if isinstance(v, int) and abs(v) > MAX_INT:
            raise ValueError(f"{_show(v)} is out of range; expected <= {MAX_INT}")
        if isinstance(v, float) and abs(v) > MAX_FLOAT:
            raise ValueError(f"{_show(v)} is out of range; expected <= {MAX_FLOAT:g}")
        if "min" in m and v < m["min"]:
            raise ValueError(f"{v} is out of range; expected >= {m['min']}")
        if "each_min" in m and v < m["each_min"]:
            raise ValueError(f"{v} is out of range; expected every item >= {m['each_min']}")
        if "gt" in m and v <= m["gt"]:
            raise ValueError(f"{v} is out of range; expected > {m['gt']}")
        if "max" in m and v > m["max"]:
            raise ValueError(f"{v} is out of range; expected <= {m['max']}")
        if "lt" in m and v >= m["lt"]:
            raise ValueError(f"{v} is out of range; expected < {m['lt']}")
    if "choices" in m and value not in m["choices"]:
        raise ValueError(f"{value!r} is not allowed; expected one of {', '.join(m['choices'])}")
    if "each_choice" in m:
        for v in values:
            if v not in m["each_choice"]:
                raise ValueError(
                    f"{v!r} is not allowed; expected items from {', '.join(m['each_choice'])}"
                )


def read_config_file(path: str | Path, cls: type) -> dict[str, tuple[Any, str]]:
    """Parse one ``key = value`` file for ``cls``; returns ``{key: (value, "file:line")}``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    fields = _field_map(cls)
    seen: dict[str, tuple[Any, str]] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        where = f"{path}:{lineno}"
        stripped = line.split("#", 1)[0].strip()
        if not stripped or (stripped.startswith("[") and stripped.endswith("]")):
            continue
        if "=" not in stripped:
            raise ConfigError(f"{where}: expected 'key = value', got {stripped!r}")
        key, _, raw = (s.strip() for s in stripped.partition("="))
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}{_suggest(key, fields)}")
        if key in seen:
            raise ConfigError(f"{where}: duplicate key {key!r} (first set at line {seen[key][1]})")
        try:
            value = parse_value(cls, key, raw)
        except ValueError as exc:
            raise ConfigError(f"{where}: {key} = {raw}: {exc}") from None
        seen[key] = (value, str(lineno))
    return {k: (v, f"{path}:{line}") for k, (v, line) in seen.items()}


def _locate_key(key: str) -> tuple[str, str]:
    """Resolve ``key`` or ``section.key`` to ``(section, key)`` for ``--set`` and presets."""
    if "." in key:
        section, _, name = key.partition(".")
        if section not in SECTIONS:
            raise ConfigError(
                f"--set {key}: unknown section {section!r}; expected 'training.' or 'ppo.'"
            )
        if name not in _field_map(SECTIONS[section]):
            fields = _field_map(SECTIONS[section])
            raise ConfigError(
                f"--set {key}: unknown key {name!r} in {FILE_OF_SECTION[section]}"
                f"{_suggest(name, fields)}"
            )
        return section, name
    owners = [s for s, cls in SECTIONS.items() if key in _field_map(cls)]
    if len(owners) == 1:
        return owners[0], key
    if len(owners) > 1:
        raise ConfigError(
            f"--set {key}: {key!r} is in both training_config.txt and ppo_config.txt; "
            f"write training.{key} or ppo.{key}"
        )
    everything = [k for cls in SECTIONS.values() for k in _field_map(cls)]
    raise ConfigError(f"--set {key}: unknown key {key!r}{_suggest(key, everything)}")


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse one ``--set key=value`` into ``(section, key, value)``."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected key=value")
    key, _, raw = (s.strip() for s in text.partition("="))
    section, name = _locate_key(key)
    try:
        return section, name, parse_value(SECTIONS[section], name, raw)
    except ValueError as exc:
        raise ConfigError(f"--set {text}: {name} {exc}") from None


def load_config(
    training_path: str | Path | None = TRAINING_CONFIG_PATH,
    ppo_path: str | Path | None = PPO_CONFIG_PATH,
    preset: str | None = None,
    overrides: Sequence[str] = (),
) -> Config:
    """Read both files (``None`` = defaults), then apply ``preset`` and ``overrides`` in order."""
    values: dict[str, dict[str, Any]] = {"training": {}, "ppo": {}}
    sources: dict[str, str] = {}
    for section, path in (("training", training_path), ("ppo", ppo_path)):
        if path is None:
            continue
        for key, (value, where) in read_config_file(path, SECTIONS[section]).items():
            values[section][key] = value
            sources[f"{section}.{key}"] = where
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(
                f"--preset {preset}: unknown preset{_suggest(preset, PRESETS)}; "
                f"expected one of {', '.join(PRESETS)}"
            )
        for section, items in PRESETS[preset].items():
            for key, raw in items.items():
                try:
                    values[section][key] = parse_value(SECTIONS[section], key, raw)
                except ValueError as exc:
                    raise ConfigError(f"preset {preset}: {key} = {raw}: {exc}") from None
                sources[f"{section}.{key}"] = f"preset {preset}"
    for text in overrides:
        section, key, value = parse_override(text)
        values[section][key] = value
        sources[f"{section}.{key}"] = "--set"
    cfg = Config(TrainingConfig(**values["training"]), PPOConfig(**values["ppo"]), sources)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Checks that span several keys; each error names the keys and where they were set."""
    t, p = cfg.training, cfg.ppo

    def where(key: str) -> str:
        return cfg.sources.get(key, "default")

    # Every field again, for configs built in code rather than parsed (issue 8 item 3).
    for section, obj in (("training", t), ("ppo", p)):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            try:
                _check(f, value)
            except ValueError as exc:
                raise ConfigError(
                    f"{f.name} = {format_value(value)} ({where(f'{section}.{f.name}')}): {exc}"
                ) from None

    if t.test_fraction + t.val_fraction * (1 - t.test_fraction) >= 0.95:
        raise ConfigError(
            f"test_fraction = {t.test_fraction} ({where('training.test_fraction')}) and "
            f"val_fraction = "
            f"{t.val_fraction} ({where('training.val_fraction')}) leave under 5% for training"
        )
    if t.purge_gap is not None and t.purge_gap < t.smoothing_k + t.lookback:
        raise ConfigError(
            f"purge_gap = {t.purge_gap} ({where('training.purge_gap')}) is below "
            f"smoothing_k + lookback "
            f"= {t.smoothing_k + t.lookback}; a window or label would straddle two blocks"
        )
    if tuple(t.features) != ("default",):
        from pipeline.features import DEFAULT_FEATURES, FEATURE_DOCS

        for name in t.features:
            if name not in FEATURE_DOCS:
                raise ConfigError(
                    f"features ({where('training.features')}): unknown feature {name!r}"
                    f"{_suggest(name, FEATURE_DOCS)}; "
                    f"'default' gives {len(DEFAULT_FEATURES)} features"
                )
    if p.prediction_model == "ensemble" and len(p.ensemble_models) < 2:
        raise ConfigError(
            f"ensemble_models = {','.join(p.ensemble_models)} ({where('ppo.ensemble_models')}): "
            "an ensemble needs at least 2 members"
        )
    if len(set(p.ensemble_models)) != len(p.ensemble_models):
        raise ConfigError(f"ensemble_models ({where('ppo.ensemble_models')}) lists a model twice")


# ================================================================ writing and CLI


def format_value(value: Any) -> str:
    """A config value as the file format writes it (``auto``, ``a, b``, ``true``), inverse of
    :func:`parse_value`."""
    if value is None:
        return "auto"
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def format_config(cfg: Config) -> str:
    """Both sections as ``key = value`` text that :func:`load_resolved` reads back."""
    lines = [f"# resolved config {cfg.hash()}", ""]
    for section, obj in (("training", cfg.training), ("ppo", cfg.ppo)):
        lines.append(f"[{section}]")
        for f in dataclasses.fields(obj):
            lines.append(f"{f.name} = {format_value(getattr(obj, f.name))}")
        lines.append("")
    return "\n".join(lines)


def write_resolved(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config beside an artifact, atomically (see :func:`load_resolved`)."""
    return atomic_write_text(path, format_config(cfg))


def load_resolved(path: str | Path) -> Config:
    """Read a file written by :func:`write_resolved` (both sections in one file)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: resolved config not found") from None
    values: dict[str, dict[str, Any]] = {"training": {}, "ppo": {}}
    section = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.split("#", 1)[0].strip()
        if not stripped:
            continue
        if stripped.startswith("["):
            section = stripped.strip("[]")
            if section not in SECTIONS:
                raise ConfigError(f"{path}:{lineno}: unknown section [{section}]")
            continue
        if section is None:
            raise ConfigError(f"{path}:{lineno}: key before any [training] or [ppo] section")
        key, _, raw = (s.strip() for s in stripped.partition("="))
        if key not in _field_map(SECTIONS[section]):
            raise ConfigError(f"{path}:{lineno}: unknown key {key!r} in [{section}]")
        try:
            values[section][key] = parse_value(SECTIONS[section], key, raw)
        except ValueError as exc:
            raise ConfigError(f"{path}:{lineno}: {key} = {raw}: {exc}") from None
    return Config(TrainingConfig(**values["training"]), PPOConfig(**values["ppo"]), {})


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--preset``, ``--set``, ``--training-config``, ``--ppo-config`` to a parser."""
    g = parser.add_argument_group("configuration")
    g.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="apply a named preset on top of the config files: smoke = tiny models and budgets for "
        "tests and CPU checks; demo = the bundled-dataset demo (< 15 min on 2 CPU cores)",
    )
    g.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value (repeatable); write training.KEY or ppo.KEY when the "
        "key is "
        "in both files, e.g. --set lookback=30 --set ppo.batch_size=512",
    )
    g.add_argument(
        "--training-config",
        type=Path,
        default=TRAINING_CONFIG_PATH,
        metavar="PATH",
        help=f"classifier/data config file (default: {TRAINING_CONFIG_PATH.name})",
    )
    g.add_argument(
        "--ppo-config",
        type=Path,
        default=PPO_CONFIG_PATH,
        metavar="PATH",
        help="PPO/environment config file (default: ppo_approach/ppo_config.txt)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    """Build the Config from arguments added by :func:`add_config_args`."""
    return load_config(args.training_config, args.ppo_config, args.preset, args.overrides)


def passthrough_args(args: argparse.Namespace) -> list[str]:
    """The configuration arguments again, for launching another step as a subprocess."""
    out: list[str] = []
    if args.preset:
        out += ["--preset", args.preset]
    for o in args.overrides:
        out += ["--set", o]
    out += ["--training-config", str(args.training_config), "--ppo-config", str(args.ppo_config)]
    return out


def render_config_file(cls: type, title: str) -> str:
    """Text of a config file: every key with its doc line and default (writes the templates)."""
    lines = [
        f"# {title}",
        "# Format: key = value; '#' starts a comment; [sections] are only for reading.",
        "",
    ]
    group = None
    for f in dataclasses.fields(cls):
        if f.metadata["group"] != group:
            group = f.metadata["group"]
            lines += ["", f"[{group}]"]
        text = format_value(f.default)
        lines.append(f"# {f.metadata['doc']} (default: {text})")
        lines.append(f"{f.name} = {text}")
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"
