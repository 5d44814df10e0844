"""The training callbacks: stop on a signal, checkpoint, progress lines, validation.

They act at ROLLOUT BOUNDARIES (``_on_rollout_start``), not at arbitrary steps: only there do the
weights reflect exactly ``num_timesteps`` of experience (SB3 trains after each full rollout, and
a stopped rollout is discarded). A checkpoint named ``checkpoint_{T}.zip`` therefore holds the
weights after ``T`` timesteps, and resuming from it loses nothing. :class:`StopRequest` +
:func:`stop_signals` turn SIGINT / SIGTERM / SIGHUP during ``learn()`` into a flag;
:class:`StopOnRequestCallback` then ends ``learn()`` and remembers the last rollout boundary, so
the caller can write the interrupt checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from pipeline.common import (
    ProgressLog,
    atomic_write_json,
)
from pipeline.run.process import handle_signals
from pipeline.store.artifacts import (
    PPO_BEST_META_NAME,
    PPO_BEST_MODEL_NAME,
    ppo_checkpoint_file,
)
from ppo_approach.evaluation import (
    ClassifierRulePolicy,
    EpisodeRecord,
    block_metrics,
    block_probs,
    flat_policy,
    policy_for,
    run_block,
)
from ppo_approach.model_files import (
    KEEP_CHECKPOINTS,
    AgentModel,
    prune_checkpoints,
    save_model_atomic,
)
from ppo_approach.reward_functions import RewardFunction
from ppo_approach.trading_env import Actions, TradingEnv

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 30.0
"""Without a progress bar, a line with timesteps done, total and ETA at least this often."""
SELECTION_KEYS = {"return": "mean_return", "reward": "mean_reward"}
"""``selection_metric`` -> the :func:`block_metrics` key that picks the best model."""


def no_trade_warning(evaluator: ValidationEvalCallback) -> str | None:
    """One line when the best policy made no trade on the validation block, else ``None``.

    Says how many validation episodes, and the classifier rule's return on the same episodes,
    so a user can tell "no edge after fees" (the rule loses too) from "did not learn" (the rule
    made money). ``None`` too when the best model's trade count is unknown (no
    evaluation ran, or a resumed run's best came from a run before this was recorded).
    """
    if evaluator.best_trades is None or evaluator.best_trades > 0:
        return None
    rule = evaluator.rule_metrics()
    there = (
        f"the classifier rule returned {100 * rule['mean_return']:+.2f} % there"
        if rule is not None
        else "the classifier rule cannot run on this block (no p_fall/p_stationary/p_rise)"
    )
    return (
        f"the best policy made no trade on the validation block ({evaluator.episodes} "
        f"episodes); {there}: no edge after fees, or the agent did not learn — see the "
        "learnability ladder"
    )


# ---------------------------------------------------------------- stop requests


class StopRequest:
    """A flag set by a signal handler (or a test) and read by :class:`StopOnRequestCallback`."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name: str | None = None

    def set(self, signal_name: str = "request") -> None:
        """Ask training to stop at the next step."""
        self.signal_name = signal_name
        self._event.set()

    def is_set(self) -> bool:
        """Whether a stop was requested."""
        return self._event.is_set()


def stop_signals(
    request: StopRequest, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
) -> Any:
    """While inside, SIGINT / SIGTERM / SIGHUP set ``request`` instead of killing the process, so
    ``learn()`` ends at a step boundary and a checkpoint is written (through the pipeline's one
    signal mechanism, :func:`pipeline.run.process.handle_signals`)."""

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if not request.is_set():
            log.warning("%s received: stopping after this step and writing a checkpoint", name)
        request.set(name)

    return handle_signals(on_signal, signals)


# ---------------------------------------------------------------- callbacks


class StopOnRequestCallback(BaseCallback):
    """Ends ``learn()`` when the :class:`StopRequest` is set; records the last rollout boundary.

    ``trained_timesteps`` is ``num_timesteps`` at the start of the current rollout, i.e. the
    timesteps the weights have actually been trained on (a stopped rollout is thrown away).
    """

    def __init__(self, request: StopRequest) -> None:
        super().__init__()
        self.request = request
        self.trained_timesteps = 0
        self.stopped = False

    def _on_training_start(self) -> None:
        self.trained_timesteps = int(self.model.num_timesteps)

    def _on_rollout_start(self) -> None:
        self.trained_timesteps = int(self.model.num_timesteps)

    def _on_step(self) -> bool:
        if self.request.is_set():
            self.stopped = True
            return False
        return True


class RolloutCheckpointCallback(BaseCallback):
    """Saves ``checkpoint_{T}.zip`` at the first rollout boundary after each ``freq`` timesteps.

    Not SB3's ``CheckpointCallback`` (which saves every ``save_freq`` calls, mid-rollout too):
    only at a rollout boundary do the weights reflect exactly ``T`` timesteps of experience.

    Counted in timesteps (``num_timesteps`` crossing multiples of ``freq``), not in callback calls;
    written atomically with its SHA-256 recorded in ``checksums.json``; afterwards only the newest
    ``keep`` checkpoints are kept. ``after_save(path)`` runs after each save (the trainer drops
    the set-aside files of the previous run after the first one).
    """

    def __init__(
        self,
        directory: Path,
        freq: int,
        keep: int = KEEP_CHECKPOINTS,
        after_save: Callable[[Path], None] | None = None,
    ) -> None:
        super().__init__()
        self.directory = directory
        self.freq = int(freq)
        self.keep = int(keep)
        self.after_save = after_save
        self.last_saved = 0
        self.saved: list[Path] = []

    def _on_training_start(self) -> None:
        self.last_saved = int(self.model.num_timesteps)

    def _on_rollout_start(self) -> None:
        timesteps = int(self.model.num_timesteps)
        if timesteps // self.freq > self.last_saved // self.freq:
            path = save_checkpoint(self.model, self.directory, timesteps, self.keep)
            self.saved.append(path)
            self.last_saved = timesteps
            log.info("checkpoint %s (%d timesteps)", path, timesteps)
            if self.after_save is not None:
                self.after_save(path)

    def _on_step(self) -> bool:
        return True


def save_checkpoint(model: AgentModel, directory: Path, timesteps: int, keep: int) -> Path:
    """Write ``checkpoint_{timesteps}.zip`` (checksum recorded); prune to the newest ``keep``."""
    path = save_model_atomic(model, ppo_checkpoint_file(directory, timesteps), record_checksum=True)
    pruned = prune_checkpoints(directory, keep)
    if pruned:
        log.debug("pruned %s (keeping the newest %d)", ", ".join(p.name for p in pruned), keep)
    return path


class ProgressLogCallback(BaseCallback):
    """Logs ``PPO training: done/total timesteps (pct), elapsed, ETA`` at least every
    ``interval_s`` seconds and at the end: for pod logs and pipes, where SB3's progress bar is
    invisible. ``total`` is the run's ``total_timesteps``.

    SB3 finishes the rollout that crosses ``total`` (100,000 -> 106,496 timesteps in the demo):
    the count is capped at ``total``, the 100 % line is logged once when it is reached and then
    at most every ``interval_s`` like the others, so the ETA is never negative.

    Between rollouts SB3 calls no callback while it updates the policy, and the validation
    evaluation runs the policy without env steps of the run: a forward hook on the policy's
    ``action_net`` (called in rollouts, in every minibatch of the update and in every
    evaluation step) gives the same check there, so a line comes at least every ``interval_s``
    through those phases too. The hook is removed at the end of training.
    """

    def __init__(
        self,
        total: int,
        interval_s: float = PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.total = max(int(total), 1)
        self.progress = ProgressLog("PPO training", total, "timesteps", interval_s, log, clock)
        self._reached = False
        """The 100 % line was logged: later ones keep the interval."""
        self._hook: Any = None

    def _init_callback(self) -> None:
        # SB3 inits every callback before any training-start hook: watching the policy from
        # here covers an evaluation of the starting policy in another callback's start too.
        self._on_training_start()

    def _on_training_start(self) -> None:
        self.beat()
        net = getattr(getattr(self.model, "policy", None), "action_net", None)
        if self._hook is None and net is not None and hasattr(net, "register_forward_hook"):
            self._hook = net.register_forward_hook(lambda *_: self.beat())

    def _on_step(self) -> bool:
        self.beat()
        return True

    def _on_training_end(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def beat(self) -> None:
        """Log a line when ``interval_s`` has passed since the last (or 100 % is first reached)."""
        done = min(int(self.model.num_timesteps), self.total)
        p = self.progress
        if self._reached and p.clock() - p.last < p.interval_s:
            return
        if p.update(done) and done >= self.total:
            self._reached = True


class ValidationEvalCallback(BaseCallback):
    """Evaluates on the VALIDATION block every ``freq`` timesteps and keeps the best model.

    Logs ``eval/mean_reward``, ``eval/mean_ep_length``, ``eval/mean_return`` and
    ``eval/mean_sharpe`` to TensorBoard and the log. The best score (mean reward) and its timesteps
    are saved in ``best_model.json`` beside ``best_model.zip`` so a resumed run keeps comparing
    against it.

    What the policy does, at each evaluation (what a user sees): ``eval/actions`` (a
    histogram of the actions picked), ``eval/action_<NAME>`` (share of steps per action),
    ``eval/invalid_share`` (invalid no-ops, counted apart), ``eval/trades_per_episode``,
    ``eval/time_in_market``, ``eval/mean_position`` and, beside ``eval/mean_return``,
    ``eval/rule_return``: the classifier rule (:class:`ClassifierRulePolicy`) on the same
    episodes, computed once. ``probs`` are the block's p_fall, p_stationary, p_rise (default: read
    from the env's prediction features by name). At the end of training,
    :func:`no_trade_warning` is logged when the best policy made no trade.
    """

    def __init__(
        self,
        env: TradingEnv,
        directory: Path,
        freq: int,
        episodes: int,
        seed: int,
        bars_per_year: float,
        stopper: StopOnRequestCallback | None = None,
        probs: np.ndarray | None = None,
        on_evaluation: Callable[[dict[str, float]], None] | None = None,
        evaluate_at_start: bool = False,
        metric: str = "return",
    ) -> None:
        super().__init__()
        self.score_key = SELECTION_KEYS[metric]
        """The :func:`block_metrics` key that picks the best model (``selection_metric``)."""
        self.evaluate_at_start = bool(evaluate_at_start)
        """Evaluate the starting policy before the first rollout (a warm-started policy is a
        candidate for the best model like any later one)."""
        self.on_evaluation = on_evaluation
        """Called with each evaluation's metrics after it is logged and the best model saved (a
        tuner reports them to its pruner; an exception it raises ends ``learn()``)."""
        self.eval_env = env
        self.stopper = stopper
        self.directory = directory
        self.freq = int(freq)
        self.episodes = int(episodes)
        self.seed = int(seed)
        self.bars_per_year = float(bars_per_year)
        self.probs = probs if probs is not None else block_probs(env)
        self.last_eval = 0
        self.best_reward = -float("inf")
        """The best evaluation's score (``score_key``: mean return, or mean reward)."""
        self.best_timesteps: int | None = None
        self.best_trades: int | None = None
        """Fills of the best evaluation over all its episodes (``None``: unknown)."""
        self.history: list[dict[str, float]] = []
        self._rule: dict[str, float] | None = None
        self._flat: dict[str, float] | None = None

    @property
    def best_path(self) -> Path:
        """``best_model.zip`` in the checkpoint folder."""
        return self.directory / PPO_BEST_MODEL_NAME

    def load_best_meta(self) -> None:
        """Continue from an earlier best (resume); silently nothing when there is none."""
        meta = self.directory / PPO_BEST_META_NAME
        if meta.is_file() and self.best_path.is_file():
            data = json.loads(meta.read_text(encoding="utf-8"))
            self.best_reward = float(data.get(self.score_key, data["mean_reward"]))
            self.best_timesteps = int(data["timesteps"])
            # A best model saved before trade counts were recorded has none: no warning then.
            trades = data.get("total_trades")
            self.best_trades = int(trades) if trades is not None else None

    def rule_metrics(self) -> dict[str, float] | None:
        """:func:`block_metrics` of the classifier rule on the evaluation episodes (computed
        once: the rule does not learn); ``None`` without probabilities."""
        if self._rule is None and self.probs is not None:
            rule = ClassifierRulePolicy(self.probs)
            records = run_block(rule, self._orders_env(), self.episodes, self.seed)
            self._rule = block_metrics(records, self.bars_per_year)
        return self._rule

    def flat_metrics(self) -> dict[str, float]:
        """:func:`block_metrics` of staying flat on the evaluation episodes (computed once): the
        score a policy must beat to be worth trading."""
        if self._flat is None:
            self._flat = block_metrics(
                run_block(flat_policy, self._orders_env(), self.episodes, self.seed),
                self.bars_per_year,
            )
        return self._flat

    def _orders_env(self) -> TradingEnv:
        """The evaluation env with the order actions (the baselines speak orders)."""
        env = self.eval_env
        if env.config.action_set != "orders":
            env = TradingEnv(
                env.data,
                dataclasses.replace(env.config, action_set="orders"),
                RewardFunction(env.reward_fn.config),
                random_start=env.random_start,
            )
        return env

    def _on_training_start(self) -> None:
        self.last_eval = int(self.model.num_timesteps)
        if self.evaluate_at_start:
            self._evaluate(self.last_eval)

    def _on_rollout_start(self) -> None:
        self._maybe_evaluate()

    def _on_training_end(self) -> None:
        # The last rollout's weights reach a boundary only here; skip it after a stop request
        # (the stopped rollout was discarded and the weights are the ones already evaluated).
        if self.stopper is None or not self.stopper.stopped:
            self._maybe_evaluate()
            # "never trades" must not pass unnoticed; logged here so no caller has to.
            warning = no_trade_warning(self)
            if warning is not None:
                log.warning("%s", warning)

    def _on_step(self) -> bool:
        return True

    def _maybe_evaluate(self) -> None:
        timesteps = int(self.model.num_timesteps)
        if timesteps // self.freq <= self.last_eval // self.freq:
            return
        self.last_eval = timesteps
        self._evaluate(timesteps)

    def _evaluate(self, timesteps: int) -> None:
        """Evaluate the current policy on the validation episodes; keep it if best so far."""
        records = run_block(policy_for(self.model), self.eval_env, self.episodes, self.seed)
        res: dict[str, float] = block_metrics(records, self.bars_per_year)
        res["timesteps"] = timesteps
        self.history.append(res)
        self.logger.record("eval/mean_reward", res["mean_reward"])
        self.logger.record("eval/mean_ep_length", res["mean_length"])
        self.logger.record("eval/mean_return", res["mean_return"])
        self.logger.record("eval/mean_sharpe", res["mean_sharpe"])
        self._record_behaviour(res, records)
        self.logger.dump(timesteps)
        better = res[self.score_key] > self.best_reward
        rule = self.rule_metrics()
        log.info(
            "eval @%d on validation: reward %.3f, length %.0f, return %+.2f%% (classifier rule "
            "%s), Sharpe %.2f, %.1f trades/episode, in market %.0f%%%s",
            timesteps,
            res["mean_reward"],
            res["mean_length"],
            100 * res["mean_return"],
            f"{100 * rule['mean_return']:+.2f}%" if rule is not None else "n/a",
            res["mean_sharpe"],
            res["trades_per_episode"],
            100 * res["time_in_market"],
            " (new best)" if better else "",
        )
        if better:
            self.best_reward = res[self.score_key]
            self.best_timesteps = timesteps
            self.best_trades = int(res["total_trades"])
            save_model_atomic(self.model, self.best_path, record_checksum=True)
            atomic_write_json(
                self.directory / PPO_BEST_META_NAME, {"mean_reward": res["mean_reward"], **res}
            )
        if self.on_evaluation is not None:
            self.on_evaluation(res)

    def _record_behaviour(self, res: dict[str, float], records: Sequence[EpisodeRecord]) -> None:
        """What the policy did: actions, trades, exposure, and the rule beside it."""
        actions = np.concatenate([rec.actions for rec in records])
        # An array is a histogram in SB3's TensorBoard output; the text outputs cannot show it.
        self.logger.record("eval/actions", actions, exclude=("stdout", "log", "json", "csv"))
        for action in Actions:
            self.logger.record(f"eval/action_{action.name}", res[f"action_{action.name}"])
        for key in ("invalid_share", "trades_per_episode", "time_in_market", "mean_position"):
            self.logger.record(f"eval/{key}", res[key])
        rule = self.rule_metrics()
        if rule is not None:
            self.logger.record("eval/rule_return", rule["mean_return"])
