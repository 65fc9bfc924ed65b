"""MkDocs hook: render plain-text math as written.

The docs and the package's docstrings (rendered on the API pages) are full of plain-text math —
``x_{l-1}``, ``p_{S*}``, ``p*(k)``, ``z'_i - z_i`` — which Markdown would otherwise read as
emphasis, swallowing the text between two underscores or two stray asterisks. With this hook:

- ``_`` is never an emphasis delimiter;
- ``*`` right after a letter or digit (``S*``, ``p*(k)``) cannot open emphasis, as in CommonMark
  and on GitHub; ``*em*`` and ``**strong**`` work as usual;
- inline ``<...>`` is text, not raw HTML, so inner products such as ``<q_i, k_l>`` or
  ``<v̄_i^h, v̄_j^h>`` are shown instead of being passed to the browser as unknown tags
  (block-level HTML such as ``<!-- comments -->`` still works).

Loaded through ``hooks:`` in mkdocs.yml; excluded from the built site by ``exclude_docs``.
"""

from __future__ import annotations

from markdown import Extension, Markdown
from mkdocs.plugins import event_priority


class PlainTextMath(Extension):
    """Markdown extension: no ``_`` emphasis, no ``*`` emphasis opened inside a word, no inline
    raw HTML."""

    def extendMarkdown(self, md: Markdown) -> None:
        delimiters = getattr(md, "delimiters", None)
        if delimiters is not None:  # Markdown >= 3.11: one delimiter processor for * and _
            delimiters.remove("_")
            delimiters.add("*", "strong,em", smart=True)
        else:  # older Markdown: a separate inline pattern for underscores
            md.inlinePatterns.deregister("em_strong2", strict=False)
        md.inlinePatterns.deregister("html", strict=False)


@event_priority(100)  # before mkdocstrings builds its Markdown from the same extension list
def on_config(config):
    config.markdown_extensions.append(PlainTextMath())
    return config
