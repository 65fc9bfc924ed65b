"""Wall time and size of `interp-icl report` on a run, cold (no caches) and warm.

Cold: a copy of the run without its analysis cache, patching results and report, so the report
computes everything (dynamics curves over every checkpoint, the last checkpoint's analysis, the
role experiments, the default patching sweep). Warm: the same command again on that copy. Each
is a fresh process, as a user runs it; median of `--repeats`.

    python benchmarks/report.py runs/quickstart
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = str(Path(sys.executable).with_name("interp-icl"))
COMPUTED = ("analysis", "patching", "results", "report.html", "report_data")


def fresh_copy(run: Path, where: Path) -> Path:
    copy = where / run.name
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(*COMPUTED))
    return copy


def timed_report(run: Path) -> float:
    start = time.perf_counter()
    subprocess.run([CLI, "report", str(run), "--no-progress"], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cold, warm = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            copy = fresh_copy(args.run, Path(tmp))
            cold.append(timed_report(copy))
            warm.append(timed_report(copy))
        size_mb = (copy / "report.html").stat().st_size / 1e6
        info = json.loads((copy / "report_data" / "report.json").read_text())
    result = {
        "run": str(args.run),
        "checkpoints": len(info["checkpoints"]),
        "cold_seconds": [round(t, 2) for t in cold],
        "cold_median": round(statistics.median(cold), 2),
        "warm_seconds": [round(t, 2) for t in warm],
        "warm_median": round(statistics.median(warm), 2),
        "report_mb": round(size_mb, 2),
        "figures": info["figures"],
        "attention_views": info["attention_views"],
        "versions": info["versions"],
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
