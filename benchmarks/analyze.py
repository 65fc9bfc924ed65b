"""Wall time of `interp-icl analyze` on a run (all passes, one checkpoint, 256 sequences).

Runs the command as a user does (a fresh process each time, cache off), `--repeats` times, and
also times the import of the analysis stack and the in-process analysis alone, so start-up cost
(torch + TransformerLens imports) and analysis cost can be told apart.

    python benchmarks/analyze.py runs/quickstart
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

IMPORTS = "import interp_icl.analysis.console, interp_icl.runs"
IN_PROCESS = """
import time, torch
torch.set_num_threads({threads})
from interp_icl.analysis.pipeline import AnalysisSettings
from interp_icl.runs import analyze_checkpoint
analyze_checkpoint({run!r}, "last", AnalysisSettings(), use_cache=False)  # warm-up
t = time.perf_counter()
analyze_checkpoint({run!r}, "last", AnalysisSettings(), use_cache=False)
print(time.perf_counter() - t)
"""


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "interp_icl.cli", "analyze", str(args.run), "--no-cache", "--out", "/tmp/interp-icl-bench"]
    timed(cli)  # warm the file cache
    command = [timed(cli) for _ in range(args.repeats)]
    imports = [timed([sys.executable, "-c", IMPORTS]) for _ in range(args.repeats)]
    out = subprocess.run([sys.executable, "-c", IN_PROCESS.format(run=str(args.run), threads=args.threads)],
                         check=True, capture_output=True, text=True)
    numbers = {
        "command_median_s": statistics.median(command),
        "command_min_s": min(command),
        "command_max_s": max(command),
        "imports_median_s": statistics.median(imports),
        "analysis_in_process_s": float(out.stdout.split()[-1]),
    }
    for key, value in numbers.items():
        print(f"{key:24s} {value:.2f}")
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
