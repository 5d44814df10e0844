"""The tuner's library: search spaces and the Optuna study."""
