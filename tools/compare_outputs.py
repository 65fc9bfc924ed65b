"""Compare what two versions of interp_icl wrote for the same run: metrics, final weights, the
exported analysis and role tables, and the report's data files.

    python tools/compare_outputs.py OLD NEW

OLD and NEW are folders laid out as the release check does it: each holds ``runs/quickstart``
(from ``interp-icl quickstart --out-dir runs``), ``analyze_out/`` (``interp-icl analyze
runs/quickstart --out analyze_out``) and ``patch_out/`` (``interp-icl patch runs/quickstart
--roles --out patch_out``). Prints one line per file: identical, or what differs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file


def json_differences(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                out.append(f"{path}.{key}: only in {'new' if key not in a else 'old'}")
            else:
                out += json_differences(a[key], b[key], f"{path}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in json_differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {str(a)[:60]} != {str(b)[:60]}"]


def compare(old: Path, new: Path) -> str:
    if not new.exists() or not old.exists():
        return f"only in {'old' if old.exists() else 'new'}"
    if old.read_bytes() == new.read_bytes():
        return "identical"
    if old.suffix == ".json":
        diffs = json_differences(json.loads(old.read_text()), json.loads(new.read_text()))
        return "; ".join(diffs[:8]) + (f" ... ({len(diffs)} differences)" if len(diffs) > 8 else "")
    if old.suffix == ".csv":
        a, b = pd.read_csv(old), pd.read_csv(new)
        if a.shape != b.shape or list(a.columns) != list(b.columns):
            return f"shape or columns differ: {a.shape} vs {b.shape}"
        columns = [c for c in a.columns if not a[c].equals(b[c])]
        return f"values differ in {columns}" if columns else "same values, different text formatting"
    return "bytes differ"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args()
    run_old, run_new = args.old / "runs" / "quickstart", args.new / "runs" / "quickstart"

    def rows(run: Path) -> list[dict]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"} for line in lines]

    print("metrics.jsonl (without elapsed_s):", "identical" if rows(run_old) == rows(run_new) else "differ")
    last = sorted((run_old / "checkpoints").glob("step_*.safetensors"))[-1].name
    a, b = load_file(str(run_old / "checkpoints" / last)), load_file(str(run_new / "checkpoints" / last))
    same = set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    print(f"checkpoints/{last}:", "identical tensors" if same else "differ")
    for folder in ("analyze_out", "patch_out", "runs/quickstart/patching"):
        for path in sorted((args.old / folder).glob("*.[cj]s*")):
            print(f"{folder}/{path.name}:", compare(path, args.new / folder / path.name))
    data_old, data_new = run_old / "report_data", run_new / "report_data"
    names = sorted({p.name for p in data_old.iterdir()} | {p.name for p in data_new.iterdir()})
    for name in names:
        print(f"report_data/{name}:", compare(data_old / name, data_new / name))


if __name__ == "__main__":
    main()
