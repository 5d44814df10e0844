"""PPO trading agent: environment, rewards, prediction tables, training and backtest."""
