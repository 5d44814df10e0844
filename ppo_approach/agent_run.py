"""What the phases of step 7 (:mod:`ppo_approach.train_ppo_agent`) share: the run's data, blocks
and settings (:class:`AgentRun`), one agent of a multi-seed run (:func:`for_seed`) and the outcome
of the training phase (:class:`Trained`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.common import Paths
from pipeline.config.schema import Config
from pipeline.store import artifacts as art
from pipeline.store.artifacts import Artifacts
from ppo_approach import run_folder
from ppo_approach.agent_blocks import AgentBlock, TableDataset
from ppo_approach.reward_functions import RewardConfig
from ppo_approach.trading_env import EnvConfig, TradingEnv


@dataclass
class AgentRun:
    """What the phases of :func:`~ppo_approach.train_ppo_agent.train_agent` share: the data, the
    blocks and the settings."""

    cfg: Config
    paths: Paths
    files: Artifacts
    dataset: TableDataset
    """The dataset the prediction table was written from (its ``.json``)."""
    blocks: dict[str, AgentBlock]
    in_sample: bool
    bars_per_year: float
    env_cfg: EnvConfig
    reward_cfg: RewardConfig
    device: str
    checkpoint_dir: Path
    fingerprint: dict[str, Any]
    final_path: Path
    """Where :func:`~ppo_approach.train_ppo_agent.train` saves the final model (a seed's own
    folder when ``seeds > 1``)."""
    meta_path: Path
    tb_name: str
    eval_seed: int
    """Seed of the validation episodes: the base seed for every agent of a multi-seed run, so
    all are compared on the same episodes."""
    model_choice: str = ""
    """Which classifier feeds the agent, and why (``prediction_model = auto``)."""

    @property
    def model_name(self) -> str:
        """The agent's artifact name (:func:`pipeline.store.artifacts.agent_name`)."""
        p = self.cfg.ppo
        return art.agent_name(p.prediction_model, p.ppo_prediction_source, p.oracle_accuracy)


@dataclass
class Trained:
    """The outcome of the training phase: the final model and what chose the backtested one."""

    model: Any
    evaluator: Any
    val_env: TradingEnv
    resumed_from: Path | None
    vec_kind: str
    warm_start: dict[str, Any] | None = None
    """What ``agent_init = rule`` did (:class:`~ppo_approach.warm_start.WarmStart`), or None."""


def for_seed(run: AgentRun, seed: int) -> AgentRun:
    """One agent of a multi-seed run (``seeds > 1``): the same data and settings with
    ``ppo.seed = seed``, in its own checkpoint folder (checkpoints, best model, final model), its
    own TensorBoard run, and its own resume fingerprint."""
    cfg = dataclasses.replace(run.cfg, ppo=dataclasses.replace(run.cfg.ppo, seed=seed))
    checkpoint_dir = run.files.ppo_seed_checkpoint_dir(run.model_name, seed)
    return dataclasses.replace(
        run,
        cfg=cfg,
        checkpoint_dir=checkpoint_dir,
        fingerprint=run_folder.run_fingerprint(
            cfg, run.dataset.sha256, run.dataset.classifier_settings
        ),
        final_path=checkpoint_dir / art.PPO_SEED_FINAL_MODEL_NAME,
        meta_path=checkpoint_dir / art.PPO_SEED_FINAL_META_NAME,
        tb_name=run.files.tensorboard_seed_name(run.model_name, seed),
    )
