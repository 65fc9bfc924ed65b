"""Checks shared by every model family."""

from __future__ import annotations

import torch
from torch import Tensor

from interp_icl.errors import TokenError, require


def check_tokens(tokens: Tensor, d_vocab: int, n_ctx: int) -> Tensor:
    """The tokens as int64 ``[batch, seq]``; TokenError unless they are integer ids in range,
    at least one sequence of at least one token and no longer than n_ctx."""
    require(isinstance(tokens, Tensor), "tokens must be a torch.Tensor", TokenError)
    require(
        tokens.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8),
        f"tokens must be integer ids, got dtype {tokens.dtype}",
        TokenError,
    )
    require(tokens.ndim == 2, f"tokens must have shape [batch, seq], got {tuple(tokens.shape)}", TokenError)
    require(
        tokens.shape[0] >= 1 and tokens.shape[1] >= 1,
        f"tokens must hold at least one sequence of at least one token, got shape {tuple(tokens.shape)}",
        TokenError,
    )
    require(
        tokens.shape[1] <= n_ctx,
        f"sequence length {tokens.shape[1]} exceeds the model's context n_ctx={n_ctx}",
        TokenError,
    )
    if tokens.numel():
        low, high = int(tokens.min()), int(tokens.max())
        require(
            low >= 0 and high < d_vocab,
            f"token ids must lie in [0, {d_vocab - 1}], got values in [{low}, {high}]",
            TokenError,
        )
    return tokens.long()


def check_vectors(tokens: Tensor, width: int, n_ctx: int | None, min_len: int = 1) -> Tensor:
    """Vector tokens ``[batch, seq, width]`` (continuous tasks); TokenError unless they are a float
    tensor of that width with at least one sequence of ``min_len``..``n_ctx`` tokens
    (``n_ctx`` None: any length)."""
    require(isinstance(tokens, Tensor), "tokens must be a torch.Tensor", TokenError)
    require(
        tokens.is_floating_point(),
        f"tokens must be float vectors [batch, seq, {width}], got dtype {tokens.dtype}",
        TokenError,
    )
    require(
        tokens.ndim == 3 and tokens.shape[-1] == width,
        f"tokens must have shape [batch, seq, {width}], got {tuple(tokens.shape)}",
        TokenError,
    )
    require(
        tokens.shape[0] >= 1 and tokens.shape[1] >= min_len,
        f"tokens need at least one sequence of at least {min_len} token(s), got {tuple(tokens.shape)}",
        TokenError,
    )
    require(
        n_ctx is None or tokens.shape[1] <= n_ctx,
        f"sequence length {tokens.shape[1]} exceeds the model's n_ctx={n_ctx}",
        TokenError,
    )
    return tokens
