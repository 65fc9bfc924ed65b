"""Figures (plotly) and self-contained HTML output; every file works offline."""
