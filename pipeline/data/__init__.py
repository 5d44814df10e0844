"""The dataset: loading and checking a candle CSV, downloading one, synthetic series, per-bar
features, labels, chronological splits and bars per year."""
