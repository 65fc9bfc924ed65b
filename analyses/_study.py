"""What the population studies in ``analyses/`` share: their command line, their sweep (run with
``interp-icl sweep`` itself), and their report page.

A study is a sweep spec committed in ``analyses/sweeps/<name>.json`` plus the measurements a
script makes on the finished cells. ``--quick`` runs the same spec with fewer seeds and steps
(each script says how) so the test suite can run the study's mechanics in seconds. The outputs go
to ``--out`` (default ``analyses/out/<name>[-quick]``):

    OUT/spec.json        the spec that ran (the committed one, or its quick form)
    OUT/sweep/           the sweep directory (results, summary, runs/<cell>/, report.html)
    OUT/<name>.html      the study's report page, data in OUT/<name>_data/
    OUT/<name>.json      the study's summary numbers

A study whose page quotes its numbers from a generated fragment also writes, on its full run, its
result tables to ``analyses/results/<name>/*.csv`` (committed, small) and the fragment
``docs/generated/<name>.md`` built from them only (``--quick``: both under OUT/ instead), so a test
can rebuild the fragment from the committed tables and fail when the page has drifted.
"""

from __future__ import annotations

import argparse
import copy
import html
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from interp_icl.jsonable import dumps
from interp_icl.runs.files import write_text
from interp_icl.viz.report import ReportPage, write_page

ANALYSES = Path(__file__).resolve().parent
RESULTS = ANALYSES / "results"
GENERATED = ANALYSES.parent / "docs" / "generated"


def parse_args(name: str, description: str, argv: list[str] | None = None,
               extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The shared options (--quick, --out, --workers); `extra` may add a study's own."""
    parser = argparse.ArgumentParser(prog=f"analyses/{name}.py", description=description)
    parser.add_argument("--quick", action="store_true", help="few seeds and steps: the study's mechanics only")
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default analyses/out/{name}[-quick])")
    parser.add_argument("--workers", type=int, default=2, help="cells at a time (default 2)")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = ANALYSES / "out" / (name + ("-quick" if args.quick else ""))
    return args


def committed_spec(name: str) -> dict[str, Any]:
    """The committed sweep spec ``analyses/sweeps/<name>.json`` as a dict."""
    return json.loads((ANALYSES / "sweeps" / f"{name}.json").read_text())


def quick_spec(spec: dict[str, Any], seeds: list[int], config: dict[str, Any], axes: dict[str, list] | None = None) -> dict[str, Any]:
    """`spec` with `seeds`, extra fixed settings `config` (dotted keys, e.g. {"train.steps": 40},
    put in as one-value axes so every cell gets them) and replaced `axes` lists."""
    quick = copy.deepcopy(spec)
    quick["seeds"] = seeds
    quick.setdefault("axes", {})
    for key, values in (axes or {}).items():
        quick["axes"][key] = values
    for key, value in config.items():
        quick["axes"][key] = [value]
    return quick


def run_sweep_command(spec: dict[str, Any], out: Path, workers: int):
    """Write `spec` to OUT/spec.json and run ``interp-icl sweep OUT/spec.json --out OUT/sweep``;
    returns the loaded sweep and the wall time. A failed cell stops the study with the sweep's
    own one-line error (exit status 1)."""
    from interp_icl import cli
    from interp_icl.sweeps import load_sweep

    out.mkdir(parents=True, exist_ok=True)
    spec_path = out / "spec.json"
    write_text(spec_path, json.dumps(spec, indent=1) + "\n")
    started = time.perf_counter()
    code = cli.run(["sweep", str(spec_path), "--out", str(out / "sweep"), "--workers", str(workers)])
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(code)
    return load_sweep(out / "sweep"), seconds


def cell_dirs(sweep) -> dict[str, Path]:
    """{cell name: its run directory} of the finished cells."""
    from interp_icl.sweeps.driver import cell_run_dir

    done = sweep.results[sweep.results["status"] == "done"]
    return {name: cell_run_dir(sweep.path, name) for name in done["cell"]}


def table_html(page: ReportPage, frame: pd.DataFrame, name: str, digits: int = 4) -> str:
    """`frame` as an HTML table, registered as the CSV `name` beside the page."""
    page.data[name] = frame
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "" if pd.isna(value) else f"{value:.{digits}g}"
        return html.escape(str(value))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in frame.itertuples(index=False))
    return f'<table><tr>{head}</tr>{body}</table><p class="data">data: {name}</p>'


def rate_text(flags: pd.Series) -> str:
    """"k/n [low, high]" of boolean `flags`: the runs where a claim holds, with the 95% Wilson
    interval of the rate; undecided entries (None / NaN) are left out, "–" when none is decided."""
    from interp_icl.sweeps import wilson_interval

    decided = flags.dropna().astype(bool)
    k, n = int(decided.sum()), len(decided)
    if n == 0:
        return "–"
    low, high = wilson_interval(k, n)
    return f"{k}/{n} [{low:.2f}, {high:.2f}]"


def mean_se_text(values: pd.Series, digits: int = 4) -> str:
    """"mean ± stderr" over the finite `values` ("–" when none)."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return "–"
    if len(values) == 1:
        return f"{values.mean():.{digits}g}"
    return f"{values.mean():.{digits}g} ± {values.std(ddof=1) / len(values) ** 0.5:.2g}"


def markdown_table(frame: pd.DataFrame) -> str:
    """`frame` as a Markdown table (cells as text; NaN / None as "–"; "|" escaped); "(none)" when
    it has no rows."""
    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return "–"
        return str(value).replace("|", "\\|").replace("\n", " ")
    if frame.empty:
        return "(none)\n"
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def markdown_html(text: str) -> str:
    """A generated fragment as HTML for the study's report page."""
    import markdown

    return markdown.markdown(text, extensions=["tables"])


def results_paths(name: str, quick: bool, out: Path) -> tuple[Path, Path]:
    """(folder of the result tables, fragment path): the committed ones for a full run, under
    `out` for ``--quick``."""
    if quick:
        return out / "results", out / f"{name}.md"
    return RESULTS / name, GENERATED / f"{name}.md"


def write_tables(folder: Path, tables: dict[str, pd.DataFrame]) -> None:
    """Each table as ``folder/<key>.csv``."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, frame in tables.items():
        write_text(folder / f"{key}.csv", frame.to_csv(index=False, lineterminator="\n"))


def read_tables(folder: Path, keys: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """The tables `write_tables` wrote (text columns stay text: "{1,2}" is not parsed)."""
    return {key: pd.read_csv(folder / f"{key}.csv", keep_default_na=True) for key in keys}


def write_fragment(path: Path, text: str, command: str) -> None:
    """Write the generated Markdown fragment `text` with a header naming `command`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, fragment_text(text, command))


def publish_fragment(path: Path, text: str, started: float) -> None:
    """Write a generated fragment `text` (with its own header) to `path`, print it and the time
    since `started` (``time.perf_counter()``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text)
    print(text)
    print(f"wrote {path.relative_to(ANALYSES.parent)} in {time.perf_counter() - started:.0f} s")


def fragment_text(text: str, command: str) -> str:
    return f"<!-- generated by {command}: do not edit -->\n\n{text}"


def publish_tables(name: str, quick: bool, out: Path, tables: dict[str, pd.DataFrame],
                   fragment: Callable[[dict[str, pd.DataFrame]], str], command: str) -> tuple[Path, Path, str]:
    """Write a study's result tables (`results_paths`), build its fragment from the tables as
    written (as the test rebuilds it) and write it; returns (tables folder, fragment path, text)."""
    folder, fragment_path = results_paths(name, quick, out)
    write_tables(folder, tables)
    text = fragment(read_tables(folder, tuple(tables)))
    write_fragment(fragment_path, text, command)
    return folder, fragment_path, text


def finish_study(page: ReportPage, args: argparse.Namespace, name: str, title: str, n_runs: int,
                 sweep_seconds: float, published: tuple[Path, Path, str]) -> dict[str, Any]:
    """Write the study's page and summary (`write_study`), print its fragment and where
    everything went; returns the summary."""
    folder, fragment_path, text = published
    summary = {"quick": args.quick, "sweep_seconds": sweep_seconds, "n_runs": n_runs,
               "results": str(folder), "fragment": str(fragment_path)}
    path = write_study(page, args.out, name, title, summary)
    print(text)
    print(f"results: {folder}; fragment: {fragment_path}; report: {path}")
    return summary


def write_study(page: ReportPage, out: Path, name: str, title: str, summary: dict[str, Any]) -> Path:
    """Write OUT/<name>.html (data in OUT/<name>_data/) and OUT/<name>.json; returns the page path."""
    path = out / f"{name}.html"
    write_page(page, path, title)
    write_text(out / f"{name}.json", dumps(summary, indent=1) + "\n")
    return path
