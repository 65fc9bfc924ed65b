"""Interactive attention patterns (circuitsvis), offline.

circuitsvis's own objects decide between its local bundle and a CDN by pinging google.com at
display time; these views never touch the network: the circuitsvis browser bundle that ships in
the installed package is inlined — once per report (`bundle_script`), or per view when a view is
shown on its own in Jupyter (``_repr_html_``).

    view = attention_view(model, tokens[0], layer=0)    # renders inline in Jupyter
"""

from __future__ import annotations

import json
import uuid
from functools import lru_cache
from pathlib import Path

import circuitsvis
import torch
from torch import Tensor, nn

from interp_icl.analysis.common import check_tokens_for, hook_cache

DIGITS = 3  # attention values are rounded to this many decimals (file size)


@lru_cache(maxsize=1)
def _bundle() -> str:
    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    return path.read_text(encoding="utf-8").replace("</script>", "<\\/script>")


def bundle_script() -> str:
    """A ``<script>`` defining the global ``CircuitsVis`` (about 1.3 MB); include it once."""
    return f"<script>{_bundle()}</script>"


class AttentionView:
    """circuitsvis ``AttentionHeads`` for one sequence: patterns ``[H, T, T]``, token labels ``[T]``."""

    def __init__(self, pattern: Tensor, tokens: list[str], head_names: list[str], title: str = ""):
        if pattern.ndim != 3 or pattern.shape[1:] != (len(tokens), len(tokens)):
            raise ValueError(
                f"pattern must be [heads, {len(tokens)}, {len(tokens)}], got {tuple(pattern.shape)}"
            )
        self.pattern = pattern.detach().float().cpu()
        self.tokens = tokens
        self.head_names = head_names
        self.title = title

    def props(self) -> dict:
        return {
            "attention": self.pattern.numpy().round(DIGITS).tolist(),
            "tokens": self.tokens,
            "attentionHeadNames": self.head_names,
            "maskUpperTri": True,
        }

    def html(self, include_bundle: bool = False) -> str:
        """A ``<div>`` and the script that renders into it (needs `bundle_script` on the page)."""
        element = "circuits-vis-" + uuid.uuid4().hex[:12]
        props = json.dumps(self.props(), separators=(",", ":"))
        heading = f"<h4>{self.title}</h4>" if self.title else ""
        bundle = bundle_script() if include_bundle else ""
        return (
            f'{heading}<div id="{element}" class="attention-view" style="margin: 15px 0;"></div>'
            f"{bundle}<script>CircuitsVis.render({json.dumps(element)}, "
            f"CircuitsVis.AttentionHeads, {props});</script>"
        )

    def _repr_html_(self) -> str:
        return self.html(include_bundle=True)


def attention_view(model: nn.Module, tokens: Tensor, layer: int, title: str = "") -> AttentionView:
    """All heads of `layer` on one sequence `tokens` ``[T]`` (token ids shown as labels; a gih
    model's row t is the query slot that predicts token t)."""
    tokens = check_tokens_for(model, tokens.reshape(1, -1))
    name = f"blocks.{layer}.attn.hook_pattern"
    with torch.no_grad():
        pattern = hook_cache(model, tokens, [name])[name][0]  # [H, T, T]
    labels = [str(int(t)) for t in tokens[0]]
    heads = [f"L{layer}H{h}" for h in range(pattern.shape[0])]
    return AttentionView(pattern, labels, heads, title)
