"""The documentation site builds in strict mode, loads nothing from other hosts, and its CLI
reference cannot go stale.

One `mkdocs build --strict` (about 3 s) is shared by every test in this module. Strict mode turns
every warning into a failure: a broken link or anchor between pages, a page missing from the nav,
a docstring mkdocstrings cannot render, a CLI command mkdocs-click cannot load.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS_TOOLS = ("mkdocs", "material", "mkdocstrings_handlers.python", "mkdocs_click", "pymdownx")


def _missing_tools() -> list[str]:
    import importlib.util

    return [name for name in DOCS_TOOLS if importlib.util.find_spec(name.split(".")[0]) is None]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    missing = _missing_tools()
    assert not missing, f"docs tools not installed ({', '.join(missing)}): pip install -e '.[test]'"
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life banner, not a warning
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    assert "WARNING" not in log, f"mkdocs build printed warnings:\n{log}"
    return out


def _text(page: Path) -> str:
    """The visible text of a built page's article (tags stripped, entities decoded)."""
    source = page.read_text(encoding="utf-8")
    start, end = source.find("<article"), source.find("</article>")
    return html.unescape(re.sub(r"<[^>]+>", "", source[start:end]))


def test_site_builds_with_every_page(site):
    for page in (
        "index.html", "install.html", "quickstart.html", "concepts.html", "analysis.html",
        "patching.html", "runs.html", "conventions.html", "extending.html", "results.html",
        "benchmarks.html", "theory.html", "cli.html", "api/index.html", "api/analysis.html",
        "api/patching.html", "api/tasks-models.html", "api/training-theory.html", "api/runs.html",
    ):
        assert (site / page).is_file(), page
    assert not (site / "_hooks").exists()  # the build hook is excluded from the site


def test_api_pages_render_the_docstrings(site):
    analysis = _text(site / "api/analysis.html")
    passes = ("copier", "selector", "classifier", "head_scores", "theory", "pipeline", "dynamics")
    for module in passes:
        assert f"interp_icl.analysis.{module}" in analysis
    # a module docstring
    assert "Copier pass: which earlier token each layer-1 head copies" in analysis
    patching = _text(site / "api/patching.html")
    for module in ("sweep", "paths", "attribution", "roles"):
        assert f"interp_icl.patching.{module}" in patching
    assert "activation_patching" in patching
    runs = _text(site / "api/runs.html")
    for module in ("loading", "training", "analysis", "patching", "store", "rundir"):
        assert f"interp_icl.runs.{module}" in runs
    assert "load_run" in runs and "settings-keyed result store" in runs
    # plain-text math survives Markdown (docs/_hooks/markdown_plain.py): no underscore emphasis,
    # no inner product swallowed as an HTML tag
    assert "carries x_{l-r}, i.e." in analysis
    assert "<v̄_i^h, v̄_j^h>" in _text(site / "api/tasks-models.html")


def test_benchmarks_page_includes_the_benchmark_readme(site):
    text = _text(site / "benchmarks.html")
    readme = (ROOT / "benchmarks/README.md").read_text(encoding="utf-8")
    for number in ("13.0 M tokens/s", "84.9×", "0.0203 s"):
        assert number in readme and number in text


def test_cli_reference_lists_every_command_and_option(site):
    """The CLI page is generated from the typer app, so it cannot go stale; this checks that the
    generation covers every command and option the installed CLI has."""
    from typer.main import get_command_name

    from interp_icl.cli import app, click_app

    # click_app is built at import time: a command registered after it would be missing
    registered = {c.name or get_command_name(c.callback.__name__) for c in app.registered_commands}
    assert set(click_app.commands) == registered
    text = _text(site / "cli.html")
    for name, command in click_app.commands.items():
        assert f"interp-icl {name} [OPTIONS]" in text, name
        for param in command.params:
            if getattr(param, "hidden", False):
                continue
            for opt in [*param.opts, *getattr(param, "secondary_opts", [])]:
                assert opt in text, f"{name} {opt}"
        assert (command.help or "").strip().splitlines()[0] in text, name


def test_site_loads_nothing_from_other_hosts(site):
    """No CDN fonts, analytics or external scripts: every page works offline. Plain hyperlinks in
    the text are allowed; tags that make the browser fetch something are not."""
    fetching = re.compile(
        r"<(script|link|img|iframe|source|audio|video|embed|object)\b[^>]*"
        r"\b(src|href|data)=[\"']?(https?:)?//",
        re.IGNORECASE,
    )
    pages = list(site.rglob("*.html"))
    assert len(pages) >= 18
    for page in pages:
        source = page.read_text(encoding="utf-8")
        assert not fetching.search(source), page
        assert "fonts.googleapis" not in source and "googletagmanager" not in source, page
    for css in site.rglob("*.css"):
        text = css.read_text(encoding="utf-8")
        assert not re.search(r"@import\s+url\(\s*[\"']?https?:", text), css


def test_readme_links_into_docs_resolve():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\((docs/[^)#]+)", readme)
    for target in targets:
        assert (ROOT / target).is_file(), f"README links to {target}, which does not exist"
