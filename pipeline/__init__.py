"""The library of the training pipeline: config, data, features, labels, splits, the classifier
nets and predictors, the prediction-table contract, artifacts and the run manifest, git plumbing.

It imports no script and nothing of ppo_approach (tests/test_layers.py).
"""
