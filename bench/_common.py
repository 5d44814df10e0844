"""What every benchmark report says about the machine it ran on (shared by the bench scripts)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


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
