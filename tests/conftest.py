"""Shared test settings: a headless matplotlib backend and quiet progress bars."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")
