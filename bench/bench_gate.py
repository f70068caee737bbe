"""Wall time of the gate profile per SDK (goal: under 60 s per SDK on a 2-core machine).

Runs `iii-conformance gate` once per SDK, one after the other, on the already-installed SDKs.
Usage: python bench/bench_gate.py [--sdk python@0.25.0 --sdk node@0.22.1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 60.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sdk", action="append", default=[])
    sdks = ap.parse_args().sdk or ["python@0.25.0", "node@0.22.1"]
    print(f"gate wall time per SDK (goal < {GOAL_S:.0f} s)")
    for sdk in sdks:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.monotonic()
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "conformance.cli",
                    "gate",
                    "--sdk",
                    sdk,
                    "--report-dir",
                    out,
                ],
                capture_output=True,
                text=True,
            )
            wall = time.monotonic() - t0
            results = Path(out, "results.json")
            n = len(json.loads(results.read_text())["results"]) if results.exists() else 0
            checks = (
                sum(r["duration_s"] for r in json.loads(results.read_text())["results"])
                if results.exists()
                else 0.0
            )
        print(
            f"  {sdk:16s} {wall:6.1f} s wall ({checks:5.1f} s in checks, {n} verdicts, "
            f"exit {proc.returncode})  ratio to goal {wall / GOAL_S:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
