"""In-context linear regression (von Oswald et al. 2023; Garg et al. 2022), REFERENCE §5.

Each sequence draws w ~ N(0, I_d), N points x_i ~ U(-s, s)^d (``x_dist="uniform"``, the default)
or N(0, s^2 I_d) (``x_dist="normal"``; with ``x_condition`` N(0, Σ), anisotropic) and a query x_q
from the same law,
y = <w, x> + noise (noise ~ N(0, sigma^2)). A sequence is stored as the vectors
``tokens[b, j] = (x_j, y_j)`` of width ``d + 1`` for the N context points and the query, shape
``[batch, N + 1, d + 1]``; the query's last slot holds its true y_q. `model_input` zeroes that slot
(what a model sees), `targets` reads it back.

Losses are half squared errors, ``0.5 * (y_hat - y_q)^2`` averaged over sequences (not nats). The
oracles on the same sequences: ``bayes`` (the posterior mean of w under the prior: ridge with
lambda = sigma^2, the minimum-norm least-squares solution when sigma = 0), ``gd1`` (one gradient
step on L(W) = 1/(2N) sum (W x_i - y_i)^2 from W = 0 with the learning rate that is best on these
sequences, closed form) and ``zero`` (predict 0; its loss is E[y_q^2]/2).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from interp_icl.builtin_tasks import RegressionConfig
from interp_icl.tasks.base import Batch
from interp_icl.theory.linear_regression_gd import (
    bayes_ridge_lambda,
    gd_step_prediction,
    input_covariance,
    least_squares_prediction,
    optimal_gd_lr,
    ridge_prediction,
    sample_regression,
)


class RegressionTask:
    def __init__(self, config: RegressionConfig):
        self.config = config
        self.x_dim = config.x_dim
        self.n_points = config.n_points
        # (Σ, A) of anisotropic inputs, built once (a QR); None for isotropic x. A has no
        # x_scale: the draw applies it.
        self._sigma = self._factor = None
        if config.x_condition is not None:
            self._sigma = input_covariance(config.x_dim, config.x_condition, config.x_basis_seed, config.x_scale)[0]
            self._factor = input_covariance(config.x_dim, config.x_condition, config.x_basis_seed)[1]

    @property
    def vocab_size(self) -> int:
        """Token width d + 1 (the model's input size; there is no vocabulary)."""
        return self.x_dim + 1

    @property
    def seq_len(self) -> int:
        return self.n_points + 1

    def x_covariance(self) -> Tensor | None:
        """Σ ``[d, d]`` float64 of anisotropic inputs (`x_condition`), None for isotropic x."""
        return None if self._sigma is None else self._sigma.clone()

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """``n`` sequences; tokens ``[n, N + 1, d + 1]`` (query's y slot = y_q), metadata ``w``.
        Draws with `interp_icl.theory.linear_regression_gd.sample_regression`."""
        c = self.config
        task = sample_regression(
            n,
            c.n_points,
            c.x_dim,
            generator,
            x_dist=c.x_dist,
            x_scale=c.x_scale,
            noise=c.noise,
            x_factor=self._factor,
        )
        context = torch.cat([task.x, task.y[..., None]], dim=-1)
        query = torch.cat([task.x_q, task.y_q[:, None]], dim=-1)
        return Batch(torch.cat([context, query[:, None]], dim=1), {"w": task.w})

    # ----- what a model sees and what it must predict -------------------------------------------
    @staticmethod
    def model_input(tokens: Tensor) -> Tensor:
        """The tokens with the query's y slot set to 0 ``[B, N + 1, d + 1]``."""
        inputs = tokens.clone()
        inputs[:, -1, -1] = 0
        return inputs

    @staticmethod
    def targets(tokens: Tensor) -> Tensor:
        """y_q ``[B]``."""
        return tokens[:, -1, -1]

    def train_loss(self, model: nn.Module, tokens: Tensor) -> Tensor:
        """Mean half squared error of the model's prediction of y_q (a scalar to backpropagate)."""
        prediction = model.predict(self.model_input(tokens))
        return 0.5 * (prediction - self.targets(tokens)).pow(2).mean()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        """``eval_loss`` of `model` on `batch` (half squared error)."""
        return {"eval_loss": float(self.train_loss(model, batch.tokens))}

    # ----- oracles -------------------------------------------------------------------------------
    def predictions(self, batch: Batch) -> dict[str, Tensor]:
        """Each oracle's prediction of y_q ``[B]`` (float64)."""
        tokens = batch.tokens.double()
        x, y = tokens[:, :-1, :-1], tokens[:, :-1, -1]
        x_q, y_q = tokens[:, -1, :-1], tokens[:, -1, -1]
        noise = self.config.noise
        if noise > 0:
            bayes = ridge_prediction(x, y, x_q, bayes_ridge_lambda(noise))
        else:
            bayes = least_squares_prediction(x, y, x_q)
        eta = optimal_gd_lr((x, y, x_q, y_q)).eta  # closed form for one step from W = 0
        return {
            "bayes": bayes,
            "gd1": gd_step_prediction(x, y, x_q, eta),
            "zero": torch.zeros_like(y_q),
        }

    def baseline_losses(self, batch: Batch) -> dict[str, float]:
        """``<oracle>_loss`` for every oracle on `batch` (half squared error of y_q)."""
        y_q = batch.tokens[:, -1, -1].double()
        return {
            f"{name}_loss": float(0.5 * (p - y_q).pow(2).mean())
            for name, p in self.predictions(batch).items()
        }

    def describe(self) -> dict[str, object]:
        c = self.config
        return {
            "task": "regression",
            "x_dim": c.x_dim,
            "n_points": c.n_points,
            "x_scale": c.x_scale,
            "x_dist": c.x_dist,
            "noise": c.noise,
            **(
                {"x_condition": c.x_condition, "x_basis_seed": c.x_basis_seed}
                if c.x_condition is not None
                else {}
            ),
            "seq_len": self.seq_len,
        }
