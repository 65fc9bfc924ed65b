"""The fast patching engine for standard-layout TransformerLens models: recompute only what a
patch can change.

A patch at layer l changes nothing before layer l, and under the causal mask nothing at positions
before the first patched position. This engine therefore starts from the base run's cached
activations and, per patch, recomputes

- in the patched layer: only the query positions the patch touches (one position for a
  positional patch of q, pattern, z, attn_out, resid_mid, mlp_out, resid_post; every query from
  the patched position on for k, v and resid_pre);
- in each later layer: keys and values only at positions whose residual changed, queries from the
  first changed position on; in the last layer only the output rows the metric reads.

Patches are stacked along a leading config axis C (so many patches share each tensor op) and
chunked to a memory budget. The arithmetic is the model's own (pre-LN blocks, softmax attention
with its scale, MLP, final LN, unembed), read through TransformerLens's weight properties
(``W_Q`` ``[H, d, d_head]``, ``W_in``, ``W_U``, ...), and is tested against
`transformer_lens.patching` to 1e-5. Models outside that layout (the gih family, rotary or gated
models) use `hooks_engine` instead; `unsupported_reason` says why.

Shapes: B base sequences, T positions, H heads, C patches, nq query rows computed per patch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interp_icl.patching.metrics import unread_to_nan
from interp_icl.patching.targets import Configs, hook_name

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu}


def unsupported_reason(model: nn.Module) -> str | None:
    """Why the fast engine cannot run `model` (None if it can)."""
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(model, "W_E") or not hasattr(model, "blocks"):
        return "not a TransformerLens model with weight properties"
    checks = [
        (
            getattr(cfg, "positional_embedding_type", None) == "standard",
            "positions are not 'standard'",
        ),
        (
            getattr(cfg, "normalization_type", None) in (None, "LN"),
            "normalization is not LN or none",
        ),
        (not getattr(cfg, "gated_mlp", False), "gated MLP"),
        (getattr(cfg, "n_key_value_heads", None) in (None, cfg.n_heads), "grouped-query attention"),
        (getattr(cfg, "attn_scores_soft_cap", -1.0) <= 0, "soft-capped attention scores"),
        (
            getattr(cfg, "attn_only", False) or getattr(cfg, "act_fn", None) in ACTIVATIONS,
            f"activation {getattr(cfg, 'act_fn', None)!r}",
        ),
    ]
    for ok, reason in checks:
        if not ok:
            return reason
    return None


@dataclass
class LayerWeights:
    """One block's weights, read through TransformerLens's weight properties (detached)."""

    ln1: tuple[Tensor, Tensor] | None
    W_Q: Tensor  # [H, d, dh]
    b_Q: Tensor  # [H, dh]
    W_K: Tensor
    b_K: Tensor
    W_V: Tensor
    b_V: Tensor
    W_O: Tensor  # [H, dh, d]
    b_O: Tensor  # [d]
    ln2: tuple[Tensor, Tensor] | None
    W_in: Tensor | None  # [d, m]
    b_in: Tensor | None
    W_out: Tensor | None  # [m, d]
    b_out: Tensor | None


@dataclass
class _Dirty:
    """Residual rows entering a layer that differ from the base run: row i is position
    ``pos[i]`` of patch ``config[i]``."""

    config: Tensor  # [Rd]
    pos: Tensor  # [Rd]
    resid: Tensor  # [Rd, B, d]
    index: Tensor  # [C, T] row of (config, position) in `resid`, -1 where unchanged


SPARSE_KEYS = 4  # at most this many changed keys per patch: attention reuses the base keys


def _max_count(config: Tensor, n_configs: int) -> int:
    return int(torch.bincount(config, minlength=n_configs).max()) if config.numel() else 0


def _slots(config: Tensor, n_configs: int) -> Tensor:
    """For entries grouped by patch (`config` sorted), each entry's index within its patch."""
    counts = torch.bincount(config, minlength=n_configs)
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(config.numel()) - starts[config]


def attention_scale(cfg) -> float:
    """The divisor of the attention scores."""
    use_scale = getattr(cfg, "use_attn_scale", True) and getattr(cfg, "attn_scale", -1.0) > 0
    return float(cfg.attn_scale) if use_scale else math.sqrt(cfg.d_head)


def norm_params(module: nn.Module) -> tuple[Tensor, Tensor]:
    return module.w.detach(), module.b.detach()


def read_layer(model: nn.Module, layer: int) -> LayerWeights:
    """Block `layer`'s weights (LN parameters None without LN, MLP weights None when attention-only)."""
    block = model.blocks[layer]
    ln = model.cfg.normalization_type == "LN"
    attn = block.attn
    mlp = None if getattr(model.cfg, "attn_only", False) else block.mlp
    return LayerWeights(
        ln1=norm_params(block.ln1) if ln else None,
        W_Q=attn.W_Q.detach(),
        b_Q=attn.b_Q.detach(),
        W_K=attn.W_K.detach(),
        b_K=attn.b_K.detach(),
        W_V=attn.W_V.detach(),
        b_V=attn.b_V.detach(),
        W_O=attn.W_O.detach(),
        b_O=attn.b_O.detach(),
        ln2=norm_params(block.ln2) if (ln and mlp is not None) else None,
        W_in=None if mlp is None else mlp.W_in.detach(),
        b_in=None if mlp is None else mlp.b_in.detach(),
        W_out=None if mlp is None else mlp.W_out.detach(),
        b_out=None if mlp is None else mlp.b_out.detach(),
    )


class FastEngine:
    """Patched outputs of a standard-layout model, recomputing only what each patch can change.

    `base` holds the base run's activations (from `needed_hooks`), `sources` the activations
    patched in (``[B or 1, ...]`` per hook), `read_rows` ``[R]`` the output rows the metric reads.
    """

    def __init__(
        self,
        model: nn.Module,
        base: dict[str, Tensor],
        base_output: Tensor,
        sources: dict[str, Tensor],
        read_rows: Tensor,
    ):
        cfg = model.cfg
        self.n_layers, self.n_heads, self.d_head = cfg.n_layers, cfg.n_heads, cfg.d_head
        self.eps = float(getattr(cfg, "eps", 1e-5))
        self.scale = attention_scale(cfg)
        self.attn_only = bool(getattr(cfg, "attn_only", False))
        self.act = None if self.attn_only else ACTIVATIONS[cfg.act_fn]
        self.layers = [read_layer(model, l) for l in range(self.n_layers)]
        self.ln_final = norm_params(model.ln_final) if cfg.normalization_type == "LN" else None
        self.W_U, self.b_U = model.W_U.detach(), model.b_U.detach()
        self.base, self.sources = base, sources
        self._log_normaliser: dict[int, Tensor] = {}  # per layer, computed when first needed
        self.read_mask = torch.zeros(base_output.shape[1], dtype=torch.bool)
        self.read_mask[read_rows] = True
        self.masked_output = unread_to_nan(base_output, read_rows)  # [B, T, V]
        self.batch = base_output.shape[0]
        self.seq_len = base_output.shape[1]
        # per layer: base q/k/v as [B, H, T, dh] for matmul attention
        self.base_qkv = [
            tuple(base[f"blocks.{l}.attn.hook_{s}"].transpose(1, 2) for s in "qkv")
            for l in range(self.n_layers)
        ]

    # ----- weights ----------------------------------------------------------------------------
    def _ln(self, x: Tensor, params: tuple[Tensor, Tensor] | None) -> Tensor:
        if params is None:
            return x
        return F.layer_norm(x, (x.shape[-1],), params[0], params[1], self.eps)

    def _project(self, x: Tensor, W: Tensor, b: Tensor) -> Tensor:
        """``[..., d] -> [..., H, dh]``."""
        return torch.einsum("...d,hde->...he", x, W) + b

    # ----- the patched forward ----------------------------------------------------------------
    def outputs(self, configs: Configs) -> Tensor:
        """``[C, B, T, V]`` outputs under each patch (all patches on one layer); rows not read NaN."""
        layers = set(configs.layer.tolist())
        assert len(layers) == 1, "FastEngine.outputs takes the patches of one layer"
        (layer,) = layers
        dirty, patch = None, configs
        if configs.site == "resid_pre":  # the patch is a changed input to its own layer
            config, pos = configs.position_mask(self.seq_len).nonzero(as_tuple=True)
            source = self.sources[hook_name("resid_pre", layer)]
            resid = source[:, pos].transpose(0, 1).expand(-1, self.batch, -1)  # [K, B, d]
            dirty, patch = self._dirty(len(configs), config, pos, resid), None
        for current in range(layer, self.n_layers):
            result = self._layer(current, dirty, patch if current == layer else None, len(configs))
            if current == self.n_layers - 1:
                return result
            dirty = result
        raise AssertionError("unreachable")

    def _dirty(self, n_configs: int, config: Tensor, pos: Tensor, resid: Tensor) -> _Dirty:
        index = torch.full((n_configs, self.seq_len), -1, dtype=torch.long)
        index[config, pos] = torch.arange(config.numel())
        return _Dirty(config, pos, resid, index)

    def _query_rows(
        self, layer: int, dirty: _Dirty | None, patch: Configs | None, n_configs: int
    ) -> tuple[Tensor, Tensor]:
        """The (patch, position) rows this layer recomputes: ``config [R]``, ``pos [R]``.

        A point patch (not k/v) changes only its own positions; a changed key or value changes
        every query from its position on. The last layer keeps only the rows the metric reads."""
        positions = torch.arange(self.seq_len)
        if patch is not None and patch.site not in ("k", "v"):
            changed = patch.position_mask(self.seq_len)
        else:
            if patch is not None:
                source_mask = patch.position_mask(self.seq_len)
            else:
                source_mask = dirty.index >= 0
            first = torch.where(
                source_mask.any(1),
                source_mask.float().argmax(1),
                torch.full((n_configs,), self.seq_len),
            )
            changed = positions[None, :] >= first[:, None]
        if layer == self.n_layers - 1:
            changed = changed & self.read_mask[None, :]
        return changed.nonzero(as_tuple=True)

    def _layer(
        self, layer: int, dirty: _Dirty | None, patch: Configs | None, n_configs: int
    ) -> Tensor | _Dirty:
        """Recompute layer `layer` at the rows the patch (or the changed input) affects."""
        weights = self.layers[layer]
        site = None if patch is None else patch.site
        config, pos = self._query_rows(layer, dirty, patch, n_configs)
        source = None if patch is None else self.sources[hook_name(site, layer)]

        def source_rows(t: Tensor) -> Tensor:
            """``[B|1, T, ...]`` -> ``[R, B|1, ...]`` at the recomputed rows."""
            return t[:, pos].transpose(0, 1)

        x = source_rows(self.base[hook_name("resid_pre", layer)])  # [R, B, d]
        input_row = None
        if dirty is not None:
            input_row = dirty.index[config, pos]  # [R], -1 where the input is the base one
            changed = input_row >= 0
            x = x.clone()
            x[changed] = dirty.resid[input_row[changed]]

        if site in ("attn_out", "resid_mid", "mlp_out", "resid_post"):
            z = None
        elif site == "z":
            heads = patch.head_mask(self.n_heads)[config][:, None, :, None]  # [R, 1, H, 1]
            z = torch.where(
                heads, source_rows(source), source_rows(self.base[hook_name("z", layer)])
            )
        else:
            z = self._attention(
                layer, weights, config, pos, x, input_row, dirty, patch, n_configs
            )  # [R, B, H, dh]

        if site in ("resid_mid", "mlp_out", "resid_post"):
            mid = source_rows(self.base[hook_name("resid_mid", layer)])
        else:
            attn_out = (
                source_rows(source)
                if site == "attn_out"
                else torch.einsum("rbhe,hed->rbd", z, weights.W_O) + weights.b_O
            )
            mid = x + attn_out
        if self.attn_only:
            post = mid
        elif site == "mlp_out":
            post = mid + source_rows(source)
        else:
            # On a TransformerBridge hook_resid_mid is the MLP's input only (TransformerLens aliases
            # it to the MLP input): a resid_mid patch changes what the MLP reads, while the skip keeps
            # the base value -- the same as transformer_lens.patching.
            mlp_in = source_rows(source) if site == "resid_mid" else mid
            hidden = self.act(self._ln(mlp_in, weights.ln2) @ weights.W_in + weights.b_in)
            post = mid + hidden @ weights.W_out + weights.b_out
        if site == "resid_post":
            post = source_rows(source).expand_as(post)

        if layer < self.n_layers - 1:
            return self._dirty(n_configs, config, pos, post)
        logits = self._ln(post, self.ln_final) @ self.W_U + self.b_U  # [R, B, V]
        out = self.masked_output[None].repeat(n_configs, 1, 1, 1)
        out[config, :, pos] = logits
        return out

    def _changed_keys(
        self, layer: int, weights: LayerWeights, dirty: _Dirty | None, patch: Configs | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """Keys/values that differ from the base run: ``config [K]``, ``pos [K]`` and the new
        key and value ``[K, B|1, H, dh]``; None if the patch changes no key."""
        k_base, v_base = self.base_qkv[layer][1], self.base_qkv[layer][2]  # [B, H, T, dh]
        if dirty is not None:
            h = self._ln(dirty.resid, weights.ln1)  # [K, B, d]
            new_k = self._project(h, weights.W_K, weights.b_K)
            new_v = self._project(h, weights.W_V, weights.b_V)
            return dirty.config, dirty.pos, new_k, new_v
        if patch is None or patch.site not in ("k", "v"):
            return None
        config, pos = patch.position_mask(self.seq_len).nonzero(as_tuple=True)
        source = self.sources[hook_name(patch.site, layer)][:, pos].transpose(
            0, 1
        )  # [K, B|1, H, dh]
        heads = patch.head_mask(self.n_heads)[config][:, None, :, None]
        base_k = k_base[:, :, pos].permute(2, 0, 1, 3)  # [K, B, H, dh]
        base_v = v_base[:, :, pos].permute(2, 0, 1, 3)
        new_k = torch.where(heads, source, base_k) if patch.site == "k" else base_k
        new_v = torch.where(heads, source, base_v) if patch.site == "v" else base_v
        return config, pos, new_k, new_v

    def _key_slots(self, changed_keys, layer: int, n_configs: int) -> tuple[Tensor, Tensor, Tensor]:
        """Changed keys laid out per patch: positions ``[C, n]``, new keys ``[C, n, B, H, dh]``,
        value changes ``[C, n, B, H, dh]``. Padding repeats a patch's first change (or position 0
        with its base key) with a zero value change, so scattering it is a no-op."""
        config, pos, new_k, new_v = changed_keys
        k_base, v_base = self.base_qkv[layer][1], self.base_qkv[layer][2]
        counts = torch.bincount(config, minlength=n_configs)
        width = int(counts.max())
        first = torch.cumsum(counts, 0) - counts  # each patch's first change
        slot = _slots(config, n_configs)
        positions = torch.zeros(n_configs, width, dtype=torch.long)
        keys = k_base[:, :, 0][None, None].repeat(n_configs, width, 1, 1, 1)
        has = counts > 0
        positions[has] = pos[first[has]][:, None]
        keys[has] = new_k[first[has]][:, None].expand(-1, width, self.batch, -1, -1)
        deltas = torch.zeros_like(keys)
        positions[config, slot] = pos
        keys[config, slot] = new_k.expand(-1, self.batch, -1, -1)
        deltas[config, slot] = new_v - v_base[:, :, pos].permute(2, 0, 1, 3)
        return positions, keys, deltas

    def _dense_attention(
        self, layer: int, changed_keys, config: Tensor, pos: Tensor, q: Tensor, n_configs: int
    ) -> Tensor:
        """z ``[R, B, H, dh]`` with a full copy of the keys and values per patch (used when a patch
        changes many keys, e.g. every position of k, or the layer after a k/v patch)."""
        k_base, v_base = self.base_qkv[layer][1], self.base_qkv[layer][2]
        key_config, key_pos, new_k, new_v = changed_keys
        k = k_base[None].repeat(n_configs, 1, 1, 1, 1)  # [C, B, H, T, dh]
        v = v_base[None].repeat(n_configs, 1, 1, 1, 1)
        k[key_config, :, :, key_pos] = new_k.expand(-1, self.batch, -1, -1)
        v[key_config, :, :, key_pos] = new_v.expand(-1, self.batch, -1, -1)
        width, slot = _max_count(config, n_configs), _slots(config, n_configs)
        q_grid = q.new_zeros(n_configs, self.batch, self.n_heads, width, self.d_head)
        q_grid[config, :, :, slot] = q.permute(2, 0, 1, 3)
        pos_grid = torch.zeros(n_configs, width, dtype=torch.long)
        pos_grid[config, slot] = pos
        scores = q_grid @ k.transpose(-1, -2) / self.scale  # [C, B, H, w, T]
        future = torch.arange(self.seq_len)[None, None, :] > pos_grid[:, :, None]
        pattern = torch.softmax(scores.masked_fill(future[:, None, None], -math.inf), dim=-1)
        return (pattern @ v)[config, :, :, slot]

    def _attention(
        self,
        layer: int,
        weights: LayerWeights,
        config: Tensor,
        pos: Tensor,
        x: Tensor,
        input_row: Tensor | None,
        dirty: _Dirty | None,
        patch: Configs | None,
        n_configs: int,
    ) -> Tensor:
        """Head outputs z ``[R, B, H, dh]`` at the recomputed rows."""
        site = None if patch is None else patch.site
        q_base, k_base, v_base = self.base_qkv[layer]  # [B, H, T, dh]
        q = q_base[:, :, pos]  # [B, H, R, dh]
        if input_row is not None:
            changed = input_row >= 0
            q = q.clone()
            q[:, :, changed] = self._project(
                self._ln(x[changed], weights.ln1), weights.W_Q, weights.b_Q
            ).permute(1, 2, 0, 3)
        if site == "q":
            source = self.sources[hook_name("q", layer)][:, pos].permute(
                0, 2, 1, 3
            )  # [B|1, H, R, dh]
            heads = patch.head_mask(self.n_heads)[config].T[None, :, :, None]  # [1, H, R, 1]
            q = torch.where(heads, source, q)
        changed_keys = self._changed_keys(layer, weights, dirty, patch)
        if changed_keys is not None and _max_count(changed_keys[0], n_configs) > SPARSE_KEYS:
            return self._dense_attention(layer, changed_keys, config, pos, q, n_configs)
        changes = None if changed_keys is None else self._key_slots(changed_keys, layer, n_configs)
        if changes is not None and site not in ("q", "pattern"):
            # rows whose query is the base one see the base softmax with a few changed keys: update
            # it instead of recomputing every row over all T keys
            fresh = input_row >= 0 if input_row is not None else torch.zeros(len(pos), dtype=torch.bool)
            if not fresh.all():
                z = torch.empty_like(q)
                kept = (~fresh).nonzero(as_tuple=True)[0]
                z[:, :, kept] = self._updated_rows(layer, changed_keys, changes, config[kept], pos[kept], n_configs)
                if fresh.any():
                    rows = fresh.nonzero(as_tuple=True)[0]
                    z[:, :, rows] = self._full_rows(layer, config[rows], pos[rows], q[:, :, rows], changes, None, None)
                return z.permute(2, 0, 1, 3)
        return self._full_rows(layer, config, pos, q, changes, site, patch).permute(2, 0, 1, 3)

    def _base_log_normaliser(self, layer: int) -> Tensor:
        """``[B, H, T]`` log Σ_j exp(s_ij) of the base run's causal attention scores (cached)."""
        cache = self._log_normaliser
        if layer not in cache:
            q_base, k_base, _ = self.base_qkv[layer]
            scores = (q_base @ k_base.transpose(-1, -2)) / self.scale
            future = torch.ones(self.seq_len, self.seq_len, dtype=torch.bool).triu(1)
            cache[layer] = torch.logsumexp(scores.masked_fill(future, -math.inf), dim=-1)
        return cache[layer]

    def _updated_rows(self, layer: int, changed_keys, changes, config: Tensor, pos: Tensor, n_configs: int) -> Tensor:
        """z ``[B, H, R, dh]`` at rows whose query is the base run's, when each patch changes at
        most SPARSE_KEYS keys / values: with a_ij = exp(s_ij − log Z_i) the base weights and s' the
        scores of the changed keys, z'_i = (z_i + Σ_changed (a'_ij v'_j − a_ij v_j)) / (1 + Σ_changed
        (a'_ij − a_ij)), over the changed keys j ≤ i (exact: the softmax with some logits replaced)."""
        q_base, k_base, v_base = self.base_qkv[layer]  # [B, H, T, dh]
        positions, keys, deltas = changes  # [C, n], [C, n, B, H, dh] x2
        counts = torch.bincount(changed_keys[0], minlength=n_configs)
        at = positions[config]  # [R, n]
        real = (torch.arange(at.shape[1])[None, :] < counts[config][:, None]) & (at <= pos[:, None])  # [R, n]
        q = q_base[:, :, pos]  # [B, H, R, dh]
        log_z = self._base_log_normaliser(layer)[:, :, pos, None]  # [B, H, R, 1]
        old_k = k_base[:, :, at]  # [B, H, R, n, dh]
        old_v = v_base[:, :, at]
        new_k = keys[config].permute(2, 3, 0, 1, 4)  # [B, H, R, n, dh]
        new_v = old_v + deltas[config].permute(2, 3, 0, 1, 4)
        old_a = torch.exp((q[..., None, :] * old_k).sum(-1) / self.scale - log_z)  # [B, H, R, n]
        new_a = torch.exp((q[..., None, :] * new_k).sum(-1) / self.scale - log_z)
        mask = real[None, None].to(q.dtype)
        old_a, new_a = old_a * mask, new_a * mask
        z_base = self.base[hook_name("z", layer)][:, pos].permute(0, 2, 1, 3)  # [B, H, R, dh]
        numerator = z_base + (new_a[..., None] * new_v - old_a[..., None] * old_v).sum(-2)
        return numerator / (1 + (new_a - old_a).sum(-1))[..., None]

    def _full_rows(self, layer: int, config: Tensor, pos: Tensor, q: Tensor, changes, site: str | None,
                   patch: Configs | None) -> Tensor:
        """z ``[B, H, R, dh]`` at the given rows from their queries `q` ``[B, H, R, dh]``: every
        key's score recomputed, the changed keys scattered in."""
        q_base, k_base, v_base = self.base_qkv[layer]
        scores = q @ k_base.transpose(-1, -2)  # [B, H, R, T]
        if changes is not None:
            positions, keys, deltas = changes
            at = positions[config]  # [R, n]
            new_scores = torch.einsum("bhrd,rnbhd->bhrn", q, keys[config])
            scores = scores.scatter(
                -1, at[None, None].expand(*scores.shape[:2], -1, -1), new_scores
            )
        scores = scores / self.scale
        future = torch.arange(self.seq_len)[None, :] > pos[:, None]  # [R, T]
        pattern = torch.softmax(scores.masked_fill(future, -math.inf), dim=-1)
        if site == "pattern":
            source = self.sources[hook_name("pattern", layer)][:, :, pos]  # [B|1, H, R, T]
            heads = patch.head_mask(self.n_heads)[config].T[None, :, :, None]
            pattern = torch.where(heads, source, pattern)
        z = pattern @ v_base  # [B, H, R, dh]
        if changes is not None:
            weight = pattern.gather(
                -1, at[None, None].expand(*pattern.shape[:2], -1, -1)
            )  # [B, H, R, n]
            z = z + torch.einsum("bhrn,rnbhd->bhrd", weight, deltas[config])
        return z

    @staticmethod
    def needed_hooks(n_layers: int, site: str) -> list[str]:
        names = []
        for layer in range(n_layers):
            names += [hook_name(s, layer) for s in ("resid_pre", "q", "k", "v", "z")]
            if site in ("mlp_out", "resid_post", "resid_mid"):
                names.append(hook_name("resid_mid", layer))
        return names

    def bytes_per_config(self, batch: int) -> int:
        """Estimated peak memory of one patch: per-config copies of q/k/v and the residual,
        attention scores over the query rows, and MLP activations."""
        T, H, dh = self.seq_len, self.n_heads, self.d_head
        d = self.W_U.shape[0]
        d_mlp = 0 if self.attn_only else self.layers[0].W_in.shape[1]
        floats = T * (3 * H * dh + 2 * d + 2 * d_mlp) + 3 * H * T * T + T * self.W_U.shape[1]
        return self.masked_output.element_size() * batch * floats
