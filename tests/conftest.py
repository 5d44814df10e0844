"""Shared test settings: a headless matplotlib backend, quiet progress bars, and logging restored
after every test (a step's ``setup_logging`` points the root logger at the stream of the test that
called it; a later test must not write to that closed stream)."""

import logging
import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    factory = logging.getLogRecordFactory()
    yield
    for h in root.handlers:
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)
    logging.setLogRecordFactory(factory)
