"""How the harness launches the mini SDK: the ``--iii-driver`` command line per seeded bug."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

MINI_DRIVER = Path(__file__).resolve().parent / "mini_driver.py"


def mini_command(bug: str) -> str:
    """``<python> .../mini_driver.py --bug <bug>``, as given to ``--iii-driver``."""
    return shlex.join([sys.executable, str(MINI_DRIVER), "--bug", bug])


def driver_label(bug: str) -> str:
    """The SDK label the harness reports results under for that driver."""
    return "custom:" + mini_command(bug)
