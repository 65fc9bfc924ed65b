"""Speed and memory of the patching engine against `transformer_lens.patching`.

The full head x position sweep of head outputs (`hook_z`, TransformerLens's
`get_act_patch_attn_head_out_by_pos`) on a trained default standard model with 64-token inputs, at
batch 1 and 16, with a metric that reads the final position and one that reads every position.
Same process, same model and inputs; each timing is the median of `--repeats` runs after a warm-up.
Both sides get the clean activations precomputed, as `transformer_lens.patching` expects.
Peak memory of each of our sweeps is measured in a fresh subprocess: the largest resident set
size sampled every 0.5 ms during one sweep, minus the size just before it (model and inputs
loaded), compared with the `--memory-mb` budget.

    python benchmarks/patching.py runs/quickstart
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import torch
from speed import median_seconds  # benchmarks/ is on sys.path when run as a script

from interp_icl.patching import Metric, Target, patch_sweep
from interp_icl.patching.sources import cached_activations
from interp_icl.runs import load_run

SEQ_LEN = 64
MEMORY_PROBE = """
import sys, threading, time, psutil, torch
torch.set_num_threads({threads})
sys.path.insert(0, {here!r})
from patching import setup, ours
model, clean, corrupted, sources, metric = setup({run!r}, {batch}, {reads!r})
process, peak, done = psutil.Process(), [0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], process.memory_info().rss)
        time.sleep(0.0005)
start = process.memory_info().rss
thread = threading.Thread(target=sample)
thread.start()
ours(model, corrupted, sources, metric, {memory_mb})
done.set()
thread.join()
print((peak[0] - start) / 2**20)
"""


def metric_for(reads: str) -> Metric:
    if reads == "final":
        return Metric(lambda out: out[:, -1, 0] - out[:, -1, 1], (-1,), "final_logit_diff")
    return Metric(lambda out: (out[..., 0] - out[..., 1]).mean(-1), None, "mean_logit_diff")


def setup(run: str, batch: int, reads: str):
    model = load_run(run).model
    generator = torch.Generator().manual_seed(batch)
    d_vocab = model.cfg.d_vocab
    clean = torch.randint(0, d_vocab, (batch, SEQ_LEN), generator=generator)
    corrupted = torch.randint(0, d_vocab, (batch, SEQ_LEN), generator=generator)
    sources = cached_activations(
        model, clean, [f"blocks.{l}.attn.hook_z" for l in range(model.cfg.n_layers)]
    )
    return model, clean, corrupted, sources, metric_for(reads)


def ours(model, corrupted, sources, metric, memory_mb):
    return patch_sweep(model, corrupted, sources, Target("z"), metric, memory_mb=memory_mb).mean


def reference(model, corrupted, clean_cache, metric):
    with contextlib.redirect_stderr(io.StringIO()):
        return transformer_lens_patching().get_act_patch_attn_head_out_by_pos(
            model, corrupted, clean_cache, lambda out: metric(out).mean()
        )


def transformer_lens_patching():
    from transformer_lens import patching

    return patching


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-mb", type=float, default=256.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for batch in (1, 16):
        for reads in ("final", "every"):
            model, clean, corrupted, sources, metric = setup(str(args.run), batch, reads)
            _, clean_cache = model.run_with_cache(clean)
            ours_mean = ours(model, corrupted, sources, metric, args.memory_mb)
            tl_mean = reference(model, corrupted, clean_cache, metric)
            tl_s = median_seconds(
                lambda: reference(model, corrupted, clean_cache, metric), args.repeats
            )
            ours_s = median_seconds(
                lambda: ours(model, corrupted, sources, metric, args.memory_mb), args.repeats
            )
            probe = MEMORY_PROBE.format(
                threads=args.threads,
                here=str(Path(__file__).parent),
                run=str(args.run),
                batch=batch,
                reads=reads,
                memory_mb=args.memory_mb,
            )
            peak = float(
                subprocess.run(
                    [sys.executable, "-c", probe], check=True, capture_output=True, text=True
                ).stdout.split()[-1]
            )
            rows.append(
                {
                    "batch": batch,
                    "metric_reads": reads,
                    "transformer_lens_s": tl_s,
                    "interp_icl_s": ours_s,
                    "speedup": tl_s / ours_s,
                    "max_abs_diff": float((ours_mean - tl_mean).abs().max()),
                    "peak_extra_mb": peak,
                    "memory_budget_mb": args.memory_mb,
                }
            )
            r = rows[-1]
            print(
                f"batch {batch:2d} reads {reads:5s}  TL {tl_s:7.3f} s  ours {ours_s:7.3f} s  "
                f"speedup {r['speedup']:6.1f}x  max|diff| {r['max_abs_diff']:.1e}  "
                f"peak +{peak:.0f} MB (budget {args.memory_mb:.0f} MB)"
            )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "run": str(args.run),
                    "threads": args.threads,
                    "repeats": args.repeats,
                    "rows": rows,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
