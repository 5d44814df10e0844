"""Where artifacts live: their names (artifacts) and the per-dataset manifest of what the steps
wrote."""
