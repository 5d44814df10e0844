"""Rule warm start: the agent starts from the classifier rule, then PPO improves.

With real classifiers' soft probabilities a few points apart, PPO from random weights found
nothing on data where trading the classifier's calls paid (the rule +236 % on
the test block of a planted-momentum walk, the agent 0 trades on 3 of 3 seeds). So before PPO,
``agent_init = rule`` fits the policy by behaviour cloning (Pomerleau 1991; the warm start of
Rajeswaran et al. 2018 "DAPG" and of most RL-from-demonstration work):

1. **Which behaviour.** The classifier rule (long 100 % while Rise is the most probable class,
   flat otherwise: :class:`ppo_approach.evaluation.ClassifierRulePolicy`) when it beats staying flat
   on the validation episodes (the same episodes and score that choose the best model); else
   flat. Where the rule loses on validation, the agent therefore starts (and, unless PPO finds
   better on validation, stays) flat.
2. **Data.** The behaviour runs over every segment of the TRAIN block (the validation and test
   blocks are never used for fitting); a second pass takes a random action on
   :data:`EXPLORE_SHARE` of the steps, so the positions PPO's sampling will visit are labelled
   too (DAgger-style, Ross et al. 2011: the label is always the behaviour's action in the state
   reached).
3. **Fit.** ``epochs`` passes of cross-entropy on the policy head, with a little label smoothing
   (``agent_init_label_smoothing``, default :data:`LABEL_SMOOTHING`: the policy keeps entropy, so
   PPO still explores and can improve on the rule) and each
   action's samples weighted by the inverse of its frequency (with ``action_set = orders`` the
   rule's BUY and CLOSE are a few % of its decisions: unweighted, a weak classifier's clone
   answered HOLD everywhere, agreed on 87 % of decisions and never traded), plus the value
   head regressed on the behaviour's discounted returns (``gamma``), so the first PPO advantages
   are not dominated by an untrained critic.

The callback then evaluates this policy on the validation block before the first rollout
(``ValidationEvalCallback(evaluate_at_start=True)``): PPO's later policies must beat it there to
become the best model, so the agent chosen on validation is never worse than its start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pipeline.common import ProgressLog
from ppo_approach.evaluation import ClassifierRulePolicy, Policy
from ppo_approach.reward_functions import RewardConfig, RewardFunction
from ppo_approach.trading_env import Actions, EnvConfig, MarketData, TradingEnv

log = logging.getLogger(__name__)

EXPLORE_SHARE = 0.25
"""Share of random actions in the second data pass (off-behaviour states get labels too)."""

LABEL_SMOOTHING = 0.3
"""Default probability mass spread over all actions in the cloning target (the policy keeps
entropy; ``agent_init_label_smoothing``). At 0.05 the clone was so sure of the rule's action that
PPO's samples rarely left it and PPO never beat its start on validation (the agent ladder)."""

BATCH_SIZE = 256
LEARNING_RATE = 1e-3


@dataclass
class WarmStart:
    """What the warm start did, for the log and the backtest report."""

    behaviour: str
    """``rule`` or ``flat``."""
    reason: str
    """Why that behaviour (the validation rewards of the rule and of flat)."""
    samples: int
    agreement: float
    """Balanced agreement: per behaviour action, the share of its train-block samples where the
    fitted policy's most probable action is that action; averaged over the actions the behaviour
    took (a clone that always answers HOLD scores 1/k, not HOLD's share)."""
    epochs: int

    def describe(self) -> str:
        """One line for the log and the step summary."""
        return (
            f"warm start: policy fitted to the {self.behaviour} behaviour ({self.reason}); it "
            f"agrees on {100 * self.agreement:.1f} % of {self.samples:,} train-block decisions "
            f"(balanced over the behaviour's actions) after {self.epochs} epochs"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the backtest report."""
        return {
            "behaviour": self.behaviour,
            "reason": self.reason,
            "samples": self.samples,
            "agreement": self.agreement,
            "epochs": self.epochs,
        }


def rule_behaviour(env: TradingEnv, probs: np.ndarray) -> Policy:
    """The classifier rule in ``env``'s action set: orders as :class:`ClassifierRulePolicy`; with
    ``action_set = target``, LONG_100 while Rise is the most probable class, else FLAT."""
    if env.config.action_set != "target":
        return ClassifierRulePolicy(probs)
    rise = np.argmax(np.asarray(probs, dtype=np.float64), axis=1) == 2  # (n,)
    long_i = env.action_names.index("LONG_100")
    flat_i = env.action_names.index("FLAT")

    def target_rule(obs: np.ndarray, info: dict[str, Any]) -> int:
        return long_i if rise[int(info["bar"])] else flat_i

    return target_rule


def flat_behaviour(env: TradingEnv) -> Policy:
    """Stay flat: FLAT (target set), or HOLD when flat and CLOSE when a position is open."""
    if env.config.action_set == "target":
        flat_i = env.action_names.index("FLAT")
        return lambda obs, info: flat_i
    return lambda obs, info: Actions.CLOSE if float(info["position"]) != 0.0 else Actions.HOLD


def _discounted(rewards: list[float], gamma: float) -> list[float]:
    out = [0.0] * len(rewards)
    acc = 0.0
    for i in range(len(rewards) - 1, -1, -1):
        acc = rewards[i] + gamma * acc
        out[i] = acc
    return out


def behaviour_data(
    data: MarketData,
    env_cfg: EnvConfig,
    reward_cfg: RewardConfig,
    behaviour: Callable[[TradingEnv], Policy],
    gamma: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(obs (N, D), actions (N,), returns (N,))`` of the behaviour over every segment of
    ``data``: one clean pass, one with :data:`EXPLORE_SHARE` random actions (labels are always
    the behaviour's action in the state reached)."""
    cfg = replace(env_cfg, episode_length=0, ruin_threshold=0.0)
    env = TradingEnv(data, cfg, RewardFunction(reward_cfg), random_start=False)
    label = behaviour(env)
    rng = np.random.default_rng(seed)
    n_actions = int(env.action_space.n)
    obs_all: list[np.ndarray] = []
    act_all: list[int] = []
    ret_all: list[float] = []
    for explore in (0.0, EXPLORE_SHARE):
        for start in data.segment_starts:
            obs, info = env.reset(options={"start": start})
            rewards: list[float] = []
            done = False
            while not done:
                a = int(label(obs, info))
                obs_all.append(obs)
                act_all.append(a)
                taken = int(rng.integers(n_actions)) if rng.random() < explore else a
                obs, reward, terminated, truncated, info = env.step(taken)
                rewards.append(float(reward))
                done = terminated or truncated
            ret_all.extend(_discounted(rewards, gamma))
    return (
        np.asarray(obs_all, dtype=np.float32),
        np.asarray(act_all, dtype=np.int64),
        np.asarray(ret_all, dtype=np.float32),
    )


def clone(
    model: Any,
    obs: np.ndarray,
    actions: np.ndarray,
    returns: np.ndarray,
    epochs: int,
    seed: int,
    label_smoothing: float = LABEL_SMOOTHING,
) -> float:
    """Fit ``model.policy`` (SB3 actor-critic, PPO or MaskablePPO) to ``actions`` (smoothed
    cross-entropy, each action's samples weighted by its inverse frequency) and its value head to
    ``returns`` (MSE); returns the balanced agreement (mean per-action recall)."""
    import torch
    import torch.nn.functional as F

    policy = model.policy
    device = policy.device
    x = torch.as_tensor(obs, device=device)  # (N, D)
    y = torch.as_tensor(actions, device=device)  # (N,)
    g = torch.as_tensor(returns, device=device)  # (N,)
    n_actions = int(model.action_space.n)
    eps = float(label_smoothing)
    target = torch.full((y.numel(), n_actions), eps / n_actions, device=device)  # (N, A)
    target.scatter_(1, y[:, None], 1.0 - eps + eps / n_actions)
    counts = torch.bincount(y, minlength=n_actions).float()  # (A,)
    present = counts > 0
    # "balanced" class weights (scikit-learn's formula): N / (k * n_c), mean weight 1 per sample
    class_w = torch.where(present, y.numel() / (present.sum() * counts.clamp(min=1)), 0.0)
    w = class_w[y]  # (N,)
    opt = torch.optim.Adam(policy.parameters(), lr=LEARNING_RATE)
    gen = torch.Generator().manual_seed(int(seed))
    policy.set_training_mode(True)
    progress = ProgressLog("warm start", int(epochs), "epochs", logger=log)  # a line every 30 s
    progress.update(0)
    for epoch in range(int(epochs)):
        order = torch.randperm(y.numel(), generator=gen).to(device)
        for i in range(0, y.numel(), BATCH_SIZE):
            idx = order[i : i + BATCH_SIZE]
            logits = _logits(policy, x[idx])  # (B, A)
            values = policy.predict_values(x[idx]).squeeze(-1)  # (B,)
            ce = -(target[idx] * F.log_softmax(logits, dim=-1)).sum(-1)  # (B,)
            loss = (w[idx] * ce).sum() / w[idx].sum()
            loss = loss + 0.5 * F.mse_loss(values, g[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
        progress.update(epoch + 1)
    policy.set_training_mode(False)
    with torch.no_grad():
        agree = torch.cat(
            [
                (_logits(policy, x[i : i + 4096]).argmax(-1) == y[i : i + 4096]).float()
                for i in range(0, y.numel(), 4096)
            ]
        )
    recalls = [agree[y == a].mean() for a in range(n_actions) if bool(present[a])]
    return float(torch.stack(recalls).mean().item())


def _logits(policy: Any, obs: Any) -> Any:
    """Action logits of an SB3 actor-critic policy for a batch of observations ``(B, D)``."""
    features = policy.extract_features(obs, policy.pi_features_extractor)
    latent_pi = policy.mlp_extractor.forward_actor(features)
    return policy.action_net(latent_pi)  # (B, A)


def warm_start(
    model: Any,
    data: MarketData,
    probs: np.ndarray,
    env_cfg: EnvConfig,
    reward_cfg: RewardConfig,
    rule_val_reward: float | None,
    flat_val_reward: float,
    epochs: int,
    gamma: float,
    seed: int,
    metric: str = "return",
    label_smoothing: float = LABEL_SMOOTHING,
) -> WarmStart:
    """Fit ``model`` to the rule (when it beat flat on validation) or to flat, on ``data`` (the
    train block) with ``probs`` (its classifier probabilities, raw). ``rule_val_reward`` and
    ``flat_val_reward`` are their validation scores by ``metric`` (``selection_metric``)."""
    if rule_val_reward is not None and rule_val_reward > flat_val_reward:
        name = "rule"
        reason = (
            f"the classifier rule's validation {metric} {rule_val_reward:.4g} beats flat's "
            f"{flat_val_reward:.4g}"
        )

        def behaviour(env: TradingEnv) -> Policy:
            return rule_behaviour(env, probs)

    else:
        name = "flat"
        reason = (
            "no classifier probabilities"
            if rule_val_reward is None
            else f"the classifier rule's validation {metric} {rule_val_reward:.4g} does not "
            f"beat flat's {flat_val_reward:.4g}"
        )
        behaviour = flat_behaviour
    log.info("warm start: cloning the %s behaviour on the train block (%d epochs)", name, epochs)
    obs, actions, returns = behaviour_data(data, env_cfg, reward_cfg, behaviour, gamma, seed)
    agreement = clone(model, obs, actions, returns, epochs, seed, label_smoothing)
    result = WarmStart(name, reason, int(actions.size), agreement, int(epochs))
    log.info("%s", result.describe())
    return result
