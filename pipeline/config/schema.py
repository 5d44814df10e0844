"""The config schema: every setting of both config files, declared once, with its type, default,
range and doc line.

:class:`TrainingConfig` (``training_config.txt``) and :class:`PPOConfig`
(``ppo_approach/ppo_config.txt``) are plain dataclasses; each field is made by
:func:`~pipeline.config.checks.setting`, which stores the doc line, the group and the range checks
(``min``, ``max``, ``gt``, ``lt``, ``choices``, ``each_min``, ``each_choice``) in the field's
metadata. :func:`~pipeline.config.checks.check_value` applies them; the parser
(:mod:`pipeline.config.files`) calls it for every value it reads, so a value out of range is
refused when the config is loaded, with the file:line or ``--set`` that set it.

The classifiers' settings (the ``model`` group of :class:`TrainingConfig`) are declared in
:mod:`pipeline.config.registry`, one entry per architecture; the fields here name them with their
types and take their default, doc line and bounds from there with :func:`model_setting`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.common import PipelineError, sha256_json
from pipeline.config import registry as model_registry
from pipeline.config.checks import model_setting, setting

NETWORK_NAMES = model_registry.NETWORK_NAMES
"""The recurrent networks, in the order the seed document lists them (pytorch_train trains them,
tune.py tunes them); from :data:`pipeline.config.registry.ARCHITECTURES`."""

MODEL_NAMES = model_registry.MODEL_NAMES
"""Every classifier step 5 can train: the four networks, and the logistic regression and LightGBM's
gradient-boosted trees on a summary of the window (the simplest models that work and the peers'
default, as first-class models the agent can use when best on validation); from
:data:`pipeline.config.registry.ARCHITECTURES`."""


class ConfigError(PipelineError):
    """A config file, preset or ``--set`` override is wrong; the message says where and why."""


# ================================================================ training_config.txt


@dataclass
class TrainingConfig:
    """Data, features, labels, splits, classifier sizes, training loop (training_config.txt)."""

    # --- data and features
    features: tuple[str, ...] = setting(
        ("default",),
        "feature names, or 'default' for the 26 documented in docs/features.md",
        "data",
    )
    network_features: tuple[str, ...] = setting(
        ("all",),
        "features the four networks read bar by bar: 'all', or names from the feature list (e.g. "
        "the per-bar ret_1, hl_range, body, upper_wick, lower_wick, volume_ratio_24); logreg and "
        "lightgbm always read every feature",
        "data",
    )
    network_wide: bool = setting(
        False,
        "wide and deep: each network's logits plus a linear model on logreg's view of the window "
        "(last bar and mean of every feature), trained together",
        "data",
    )
    lookback: int = setting(
        60, "bars per input window (the model sees lookback x features)", "data", min=2
    )
    # --- labels (Ntakaris et al. 2018): r(t) = mean(close[t+1..t+k]) / close(t) - 1
    smoothing_k: int = setting(5, "label horizon k: bars averaged after t", "data", min=1)
    threshold_delta: float | None = setting(
        None,
        "class threshold on r(t); 'auto' = balanced classes on the training block",
        "data",
        gt=0,
    )
    # --- chronological splits
    test_fraction: float = setting(
        0.2, "final test block: last fraction of usable bars", "data", gt=0, lt=1
    )
    val_fraction: float = setting(
        0.2, "classifier validation: last fraction of the development block", "data", gt=0, lt=1
    )
    purge_gap: int | None = setting(
        None,
        "bars dropped between blocks; 'auto' = smoothing_k + lookback (the minimum)",
        "data",
        min=0,
    )
    walk_forward_folds: int = setting(
        4, "folds over the development block for out-of-sample agent predictions", "data", min=3
    )
    # --- model sizes: every setting of pipeline/config/registry.py, in registry order, with its
    # type, default, doc line and bounds from there, so a new architecture's settings appear
    # here by themselves. Made at import, so mypy does not see these fields: library code reads
    # them with model_params() (tests read the attributes as usual).
    if not TYPE_CHECKING:
        for _key in model_registry.config_keys():
            __annotations__[_key] = model_registry.config_setting(_key).value_type.__name__
            locals()[_key] = model_setting(_key)
        del _key
    # --- training loop
    batch_size: int = setting(
        1024, "batch size (auto-adjusted to GPU memory on CUDA)", "train", min=1
    )
    epochs: int = setting(
        150, "maximum epochs (early stopping usually ends sooner)", "train", min=1
    )
    patience: int = setting(
        15, "early stopping: epochs without validation-loss improvement", "train", min=1
    )
    learning_rate: float = setting(1e-3, "Adam learning rate", "train", gt=0, max=1)
    weight_decay: float = setting(0.0, "Adam weight decay", "train", min=0)
    lr_schedule: str = setting(
        "constant",
        "constant | warmup_cosine (linear warm-up over 3 epochs, then cosine to 0.1x over epochs)",
        "train",
        choices=("constant", "warmup_cosine"),
    )
    grad_clip: float = setting(1.0, "gradient clipping max norm (0 = off)", "train", min=0)
    min_steps_per_epoch: int = setting(
        50,
        "optimizer steps an epoch keeps: the batch is cut to at most training windows / this "
        "(never below 32), and the CUDA auto-size grows it only that far; the learning rate "
        "grows with the square root of the batch's growth; 1 = the configured batch",
        "run",
        min=1,
    )
    amp: bool = setting(
        True, "mixed precision on CUDA (bf16 if supported, else fp16 + GradScaler)", "train"
    )
    seed: int = setting(42, "seed for torch, numpy and the data order", "train", min=0)
    device: str = setting("auto", "auto | cpu | cuda", "run", choices=("auto", "cpu", "cuda"))
    num_threads: int = setting(
        0, "CPU threads for torch; 0 = number of physical cores", "run", min=0
    )
    walk_forward_models: str = setting(
        "all",
        "all = walk-forward fold models for every model; agent = only for the model(s) the agent "
        "uses (prediction_model; auto = best validation macro-F1), the demo's cheaper step 5",
        "run",
        choices=("all", "agent"),
    )
    models: tuple[str, ...] = setting(
        MODEL_NAMES,
        "classifiers step 5 trains (train_models.py --models overrides; the agent's ensemble "
        "trains its members)",
        "run",
        each_choice=MODEL_NAMES,
    )
    # --- evaluation (rolling_eval.py)
    evaluation: str = setting(
        "single",
        "single = one test block; rolling = also retrain steps 5 and 7 before each of "
        "rolling_folds test blocks over the same final stretch and report the distribution",
        "run",
        choices=("single", "rolling"),
    )
    rolling_folds: int = setting(3, "test blocks of the rolling-origin evaluation", "run", min=2)
    # --- leak alarms (pipeline/checks/leak_alarms.py)
    leak_controls: bool = setting(
        True,
        "step 5 runs the label-permutation control: the best model retrained on permuted train "
        "labels must score at chance",
        "run",
    )
    strict_alarms: bool = setting(
        False,
        "stop with exit code 4 when a leak alarm fires (the flag --strict sets it)",
        "run",
    )
    alarm_direction_accuracy: float = setting(
        0.65,
        "leak alarm when a model's test direction accuracy is above this (and significant)",
        "run",
        gt=0.5,
        max=1,
    )
    # --- preflight and push (runpod_main.py, runpod_github.py)
    min_disk_gb: float = setting(
        10.0, "preflight: free disk needed where artifacts go (GB)", "run", min=0
    )
    min_memory_gb: float = setting(8.0, "preflight: memory needed (GB)", "run", min=0)
    git_remote: str = setting("origin", "push: git remote name", "run")
    git_branch: str = setting("main", "push: branch to push", "run")
    push_max_file_mb: float = setting(
        100.0, "push: per-file size limit of the host (MB)", "run", gt=0
    )

    def resolved_features(self) -> list[str]:
        """The feature names, with ``default`` expanded to the documented default list."""
        if tuple(self.features) == ("default",):
            from pipeline.data.features import DEFAULT_FEATURES

            return list(DEFAULT_FEATURES)
        return list(self.features)

    def network_columns(self) -> list[int] | None:
        """Columns of the feature list the networks read (``network_features``); ``None`` for
        all. A name outside the feature list is a :class:`ConfigError` naming it."""
        if tuple(self.network_features) == ("all",):
            return None
        names = self.resolved_features()
        missing = [f for f in self.network_features if f not in names]
        if missing:
            raise ConfigError(
                f"network_features: {', '.join(missing)} not in the feature list (features = "
                f"{', '.join(self.features)}); expected 'all' or names from that list"
            )
        return [names.index(f) for f in self.network_features]

    def model_params(self, model: str) -> dict[str, Any]:
        """Architecture parameters of one classifier (``units``, ``layers``, ``dropout``, ...):
        the registry's settings of ``model`` under their arch-dict keys, valued from this config."""
        if model not in MODEL_NAMES:
            raise ConfigError(f"unknown model {model!r}; expected one of {', '.join(MODEL_NAMES)}")
        arch = model_registry.architecture(model)
        return {s.key: getattr(self, arch.config_key(s)) for s in arch.settings}

    def model_keys(self, model: str) -> list[str]:
        """The settings that change what ``model`` learns: data, training loop, its own sizes.

        The one list behind :meth:`hash_for_model` (is a model file current?) and the agent's
        resume fingerprint (which classifier settings its predictions came from). Other models'
        sizes, the device and the run settings are left out, so changing ``gru_units`` does not
        retrain the LSTM.
        """
        prefix = f"{model}_"
        return [
            f.name
            for f in dataclasses.fields(self)
            if f.metadata["group"] in ("data", "train")
            or (f.metadata["group"] == "model" and f.name.startswith(prefix))
        ]

    def hash_for_model(self, model: str) -> str:
        """Hash of :meth:`model_keys` of ``model`` (with the resolved feature list)."""
        relevant: dict[str, Any] = {k: getattr(self, k) for k in self.model_keys(model)}
        relevant["features"] = self.resolved_features()
        relevant["model"] = model
        return sha256_json(relevant)[:16]


# ================================================================ ppo_config.txt


@dataclass
class PPOConfig:
    """Prediction source, PPO hyperparameters, environment, reward (ppo_config.txt)."""

    # --- which classifier feeds the agent
    # auto, no longer dlstm: dlstm, the old default, was the weakest model on some data.
    prediction_model: str = setting(
        "auto",
        "auto (the simplest model within one standard error of step 5's best validation "
        "macro-F1, the s.e. of the best's lead over it on the same rows, or the ensemble of "
        "every model when it beats each alone by more than one "
        "standard error on the out-of-fold agent-val rows; named in every report) | lstm | gru | "
        "bilstm | dlstm | logreg | window_logreg | lightgbm | ensemble",
        "model",
        choices=("auto", *MODEL_NAMES, "ensemble"),
    )
    ensemble_models: tuple[str, ...] = setting(
        ("dlstm", "bilstm"),
        "members when prediction_model = ensemble",
        "model",
        each_choice=MODEL_NAMES,
    )
    ensemble_method: str = setting(
        "mean",
        "mean = average the members; weighted = weights by ensemble selection, stacking = a "
        "logistic-regression meta-model; both fitted on out-of-fold agent-train rows and chosen "
        "on agent-val rows against the mean and each member alone",
        "model",
        choices=("mean", "weighted", "stacking"),
    )
    ppo_prediction_source: str = setting(
        "walk_forward",
        "walk_forward: agent bars predicted by models never trained on them; in_sample: flagged; "
        "oracle: the true future class; noisy_oracle: calibrated soft probabilities with a "
        "controlled edge on the true class (both use future data: diagnostics of the RL setup "
        "only, written under their own names)",
        "model",
        choices=("walk_forward", "in_sample", "oracle", "noisy_oracle"),
    )
    oracle_accuracy: float = setting(
        1.0,
        "oracle: share of bars that keep the true class (the rest get a random one); "
        "noisy_oracle: the accuracy of the most probable class (1/3 = no edge)",
        "model",
        min=0,
        max=1,
    )
    price_feature_scaling: str = setting(
        "none",
        "none | train_zscore: the agent's price features as computed, or standardised with the "
        "mean and std of the agent's train block (the same numbers for val and test)",
        "model",
        choices=("none", "train_zscore"),
    )
    prediction_feature_scaling: str = setting(
        "none",
        "none | train_zscore: the classifier's probabilities as they are, or standardised with "
        "the mean and std of the agent's train block (soft probabilities a few points apart)",
        "model",
        choices=("none", "train_zscore"),
    )
    edge_feature: bool = setting(
        False, "add edge = p_rise - p_fall to the agent's prediction features", "model"
    )
    # --- rule warm start
    agent_init: str = setting(
        "rule",
        "rule: before PPO, fit the policy to the classifier rule's actions on the train block "
        "(to flat when the rule loses to flat on validation), and evaluate that policy first; "
        "random: PPO from random weights",
        "ppo",
        choices=("rule", "random"),
    )
    agent_init_epochs: int = setting(
        10, "agent_init = rule: behaviour-cloning passes over the train block", "ppo", min=1
    )
    # 0.3, not 0.05, from the agent ladder: at 0.05 the cloned policy put ~97 % on the rule's
    # action, PPO's samples rarely left it and no PPO policy beat its start on validation (0 of 14
    # rule-started seeds); at 0.3 PPO beat it on 3 of 5 and added to the rule on the noisy-oracle
    # row.
    agent_init_label_smoothing: float = setting(
        0.3,
        "agent_init = rule: probability spread over all actions in the cloning target (the "
        "cloned policy keeps this much exploration for PPO)",
        "ppo",
        min=0,
        lt=1,
    )
    # --- PPO (Schulman et al. 2017), SB3 meanings
    algorithm: str = setting(
        "ppo",
        "ppo | maskable_ppo (sb3-contrib: invalid actions masked out of the policy)",
        "ppo",
        choices=("ppo", "maskable_ppo"),
    )
    total_timesteps: int = setting(150_000, "environment steps to train for", "ppo", min=1)
    n_steps: int = setting(
        1024, "rollout steps per environment per update (SB3 meaning)", "ppo", min=1
    )
    batch_size: int = setting(2048, "minibatch size of the PPO update", "ppo", min=2)
    n_epochs: int = setting(20, "passes over each rollout", "ppo", min=1)
    learning_rate: float = setting(3e-4, "Adam learning rate", "ppo", gt=0, max=1)
    gamma: float = setting(0.99, "discount factor", "ppo", gt=0, max=1)
    gae_lambda: float = setting(0.95, "GAE lambda (Schulman et al. 2016)", "ppo", min=0, max=1)
    clip_range: float = setting(0.2, "PPO clipping epsilon", "ppo", gt=0)
    ent_coef: float = setting(0.01, "entropy bonus coefficient", "ppo", min=0)
    vf_coef: float = setting(0.5, "value loss coefficient", "ppo", min=0)
    max_grad_norm: float = setting(0.5, "gradient clipping max norm", "ppo", gt=0)
    net_arch: tuple[int, ...] = setting(
        (1280, 640), "hidden layers of the separate policy and value networks", "ppo", each_min=1
    )
    n_envs: int = setting(16, "parallel environments", "ppo", min=1)
    # One env step costs ~4 us, far below a SubprocVecEnv round trip, so in-process vector envs
    # win here; batched steps all copies with numpy (BENCHMARKS.md, vectorised environments).
    vec_env: str = setting(
        "batched",
        "batched (all copies as arrays, stepped with numpy; the same observations, rewards and "
        "infos as dummy) | dummy (a loop over the copies) | subproc (one process per copy)",
        "ppo",
        choices=("batched", "dummy", "subproc"),
    )
    device: str = setting("auto", "auto | cpu | cuda", "ppo", choices=("auto", "cpu", "cuda"))
    seed: int = setting(42, "seed of PPO and the environments", "ppo", min=0)
    seeds: int = setting(
        1,
        "agents trained, with seeds seed, seed+1, ...; the best on the validation block becomes "
        "the final model and the backtest reports every seed's test result",
        "ppo",
        min=1,
        max=32,
    )
    alarm_sharpe: float = setting(
        5.0,
        "leak alarm when the agent's annualised test Sharpe ratio after fees is above this",
        "ppo",
        gt=0,
    )
    configurations_tried: int = setting(
        1,
        "configurations tried to arrive at these settings (tune.py's best_params.txt sets its "
        "trial count); the agent's deflated Sharpe ratio counts them times the seeds",
        "ppo",
        min=1,
    )
    # --- callbacks
    checkpoint_freq: int = setting(
        25_000, "checkpoint every this many timesteps", "callbacks", min=1
    )
    keep_checkpoints: int = setting(
        3,
        "checkpoints kept per run (the newest; the best model is kept besides)",
        "callbacks",
        min=1,
    )
    eval_freq: int = setting(
        5_000, "evaluate on the validation block every this many timesteps", "callbacks", min=1
    )
    eval_episodes: int = setting(5, "episodes per evaluation", "callbacks", min=1)
    # return, no longer reward: the reward's drawdown term scored a rule that made money on
    # validation below flat (-15.0 vs 0 at +1.3 %), so the best model drifted to "never trade".
    selection_metric: str = setting(
        "return",
        "what picks the best model and seed on the validation episodes: return (mean total "
        "return after fees) or reward (mean summed env reward)",
        "callbacks",
        choices=("return", "reward"),
    )
    # --- environment
    initial_capital: float = setting(10_000.0, "starting cash", "env", gt=0)
    transaction_cost: float = setting(
        0.001, "fee per side as a fraction of traded notional", "env", min=0, lt=1
    )
    slippage: float = setting(
        0.0, "adverse fill slippage as a fraction of the open price", "env", min=0, lt=1
    )
    allow_short: bool = setting(False, "allow short positions", "env")
    episode_length: int = setting(
        1000, "steps per training episode; 0 = to the block's end", "env", min=0
    )
    ruin_threshold: float = setting(
        0.5, "episode ends when equity < this x initial capital", "env", min=0, lt=1
    )
    # target, no longer orders: the warm start clones the classifier rule exactly in this set (a
    # position per state), and on oracle input PPO reached +744 % with it against +1.3 % with
    # orders; the ladder in BENCHMARKS.md compares both on real predictions.
    action_set: str = setting(
        "target",
        "orders: the nine order actions (HOLD, BUY_25 .. REVERSE); target: the position to hold "
        "(flat, long 50 %, long 100 %; with allow_short: short 100 %, flat, long 100 %), each "
        "turned into the one order that reaches it",
        "env",
        choices=("orders", "target"),
    )
    # --- reward (reward_functions.py)
    # gt, not min: the cost and drawdown terms are scaled by it too, so 0 silences the whole reward
    # (RewardConfig always refused 0; the config accepted it until both used this schema).
    profit_scale: float = setting(
        100.0, "profit term: step return of equity x this", "reward", gt=0
    )
    # 0: the fees are already in the equity change; an extra penalty on top made "never trade" the
    # optimum as soon as the signal was noisy (the learnability ladder).
    cost_weight: float = setting(
        0.0, "extra transaction-cost penalty weight (0: fees are charged once)", "reward", min=0
    )
    drawdown_weight: float = setting(
        1.0, "penalty weight on increases of drawdown", "reward", min=0
    )
    sharpe_weight: float = setting(0.1, "differential Sharpe ratio bonus weight", "reward", min=0)
    sharpe_eta: float = setting(
        0.01, "adaptation rate of the differential Sharpe ratio", "reward", gt=0, lt=1
    )
    reward_clip: float = setting(10.0, "the summed reward is clipped to [-x, x]", "reward", gt=0)
    # log, from the learnability ladder: the episode's summed profit term is its log return.
    profit_return: str = setting(
        "log",
        "profit term on the simple step return (E_t/E_t-1 - 1) or the log return (log E_t/E_t-1)",
        "reward",
        choices=("simple", "log"),
    )
    # --- backtest report
    random_policy_seeds: int = setting(
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
