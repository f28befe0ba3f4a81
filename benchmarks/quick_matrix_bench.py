"""Benchmark: wall time of the quick matrix on this machine, against the 5-minute target.

Runs `proxylab matrix` (the quick plan) with the installed environment, so installation time
is not counted, and prints the total time, the time per cell and the proxy's throughput.
Usage: .venv/bin/python benchmarks/quick_matrix_bench.py [extra matrix flags]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 300.0


def main() -> int:
    run_id = f"bench-quick-{int(time.time())}"
    started = time.monotonic()
    completed = subprocess.run([sys.executable, "-m", "proxylab.cli", "matrix", "--run-id", run_id,
                                *sys.argv[1:]], cwd=REPO_ROOT)
    elapsed_s = time.monotonic() - started
    if completed.returncode != 0:
        print(f"quick matrix failed (exit {completed.returncode}) after {elapsed_s:.0f} s")
        return completed.returncode
    summary = json.loads((REPO_ROOT / "results" / run_id / "summary.json").read_text())
    cells = summary["cells"]
    load_s = sum(cell["wall_s"] for cell in cells)
    rps = [cell["statistics"]["all"]["rps"] for cell in cells]
    verdict = "ok" if elapsed_s <= TARGET_S else "MISSED"
    print(f"quick matrix: {elapsed_s:.0f} s in all (target <= {TARGET_S:.0f} s: {verdict}); "
          f"{len(cells)} cells, {load_s:.0f} s under load, {elapsed_s - load_s:.0f} s starting "
          f"and stopping services; proxy throughput {min(rps):.0f}..{max(rps):.0f} requests/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
