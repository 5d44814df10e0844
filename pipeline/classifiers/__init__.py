"""The classifier side: the prepared arrays, windows, networks and tabular models, metrics and
report, predictors, ensembles, the choice of the agent's model and the prediction table."""
