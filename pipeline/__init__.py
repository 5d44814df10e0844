"""Shared library of the training pipeline: config, data, features, backtest metrics."""
