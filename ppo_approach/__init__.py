"""The PPO trading agent: env, rewards, the agent blocks, training, checkpoints, backtest."""
