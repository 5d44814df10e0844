"""The names of downloaded exchange datasets and of an unfinished download's files.

``ADA-EUR_1H_20240101-20251231`` is a spot pair's candles as ``download_data.py`` names them
(:func:`exchange_dataset_name`, parsed back by :func:`parse_exchange_dataset_name`); the general
rule of a dataset's name is :func:`pipeline.store.artifacts.dataset_name`.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from pipeline.store.artifacts import dataset_name

EXCHANGE_DATASET_RE = re.compile(
    r"^(?P<base>[A-Z0-9]+)-(?P<quote>[A-Z0-9]+)_(?P<tf>[0-9]+(?:MO|[SMHDWY]))"
    r"_(?P<start>[0-9]{8})-(?P<end>[0-9]{8})$"
)
"""``ADA-EUR_1H_20240101-20251231``: a spot pair's candles as ``download_data.py`` names them."""


def timeframe_label(timeframe: str) -> str:
    """ccxt timeframe -> its part of a dataset name: ``1h`` -> ``1H``, ``15m`` -> ``15M``.

    ccxt's month ``1M`` becomes ``1MO``: upper case alone would make it the minute's ``1M``.
    """
    tf = timeframe.strip()
    return tf[:-1] + "MO" if tf.endswith("M") else tf.upper()


def label_timeframe(label: str) -> str:
    """The inverse of :func:`timeframe_label`: ``1H`` -> ``1h``, ``1MO`` -> ``1M``."""
    return label[:-2] + "M" if label.endswith("MO") else label.lower()


def exchange_dataset_name(symbol: str, timeframe: str, start: datetime, end: datetime) -> str:
    """``{BASE}-{QUOTE}_{TF}_{YYYYMMDD}-{YYYYMMDD}``: the dataset name of downloaded candles.

    ``ADA/EUR``, ``1h``, 2024-01-01, 2025-12-31 -> ``ADA-EUR_1H_20240101-20251231`` (``end`` is
    the last day included). A derivative's settle currency is kept as a third part:
    ``BTC/USDT:USDT`` -> ``BTC-USDT-USDT_...``.
    """
    parts = re.split(r"[/:]", symbol.strip().upper())
    pair = "-".join(re.sub(r"[^A-Z0-9]", "", p) for p in parts if p)
    return f"{pair}_{timeframe_label(timeframe)}_{start:%Y%m%d}-{end:%Y%m%d}"


def parse_exchange_dataset_name(name: str) -> dict[str, str] | None:
    """``ADA-EUR_1H_20240101-20251231`` -> ``{"symbol": "ADA/EUR", "timeframe": "1h", "start":
    "2024-01-01", "end": "2025-12-31"}``; ``None`` for any other name."""
    m = EXCHANGE_DATASET_RE.match(dataset_name(name))
    if m is None:
        return None
    try:
        start = datetime.strptime(m["start"], "%Y%m%d")
        end = datetime.strptime(m["end"], "%Y%m%d")
    except ValueError:
        return None
    return {
        "symbol": f"{m['base']}/{m['quote']}",
        "timeframe": label_timeframe(m["tf"]),
        "start": f"{start:%Y-%m-%d}",
        "end": f"{end:%Y-%m-%d}",
    }


def download_partial(folder: Path, name: str) -> Path:
    """``{folder}/.{name}.partial.csv``: the candles of an unfinished download."""
    return Path(folder) / f".{name}.partial.csv"


def download_state(folder: Path, name: str) -> Path:
    """``{folder}/.{name}.partial.json``: what the unfinished download asked for."""
    return Path(folder) / f".{name}.partial.json"
