"""What every benchmark report says about the machine it ran on (shared by the bench scripts).

The bench scripts import the project's packages as an installed project (``make install`` or
``pip install -e .``), not through a ``sys.path`` patch. Importing this module first checks that
they can be found and otherwise exits with one line saying how to install: each script imports it
(``from _common import ...``, found beside the script) before any project module, which ruff's
import sorting keeps true (third-party section before first-party).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from pathlib import Path

# The top-level names the bench scripts import from the project.
PROJECT_MODULES = ("pipeline", "ppo_approach", "pytorch_train")


def require_installed_project() -> None:
    """Exit with one line (exit code 1) when the project's modules cannot be imported."""
    missing = [name for name in PROJECT_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(
            f"error: the project is not installed in this Python ({sys.executable}): cannot "
            f"import {', '.join(missing)}; run `make install` or `pip install -e .` in the "
            "project folder first"
        )


require_installed_project()


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else ``platform.processor()`` or ``unknown``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> float:
    """1-minute load average (NaN where the OS has none): other jobs inflate the timings."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def gpu_description() -> str:
    """``CUDA GPU <name>`` or ``no GPU`` (as torch sees it; ``no GPU`` without torch)."""
    try:
        import torch
    except ImportError:
        return "no GPU"
    if not torch.cuda.is_available():
        return "no GPU"
    return f"CUDA GPU {torch.cuda.get_device_name(0)}"
