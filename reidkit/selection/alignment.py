"""Patch-to-token alignment of MMPL (sec. 3.2, eq. 13-19): OT between patches and prompt tokens.

For one granularity level, image ``x`` contributes its ``M`` selected patch features
``{f_m}`` and identity ``l`` the output features ``{p_n}`` of the ``N`` learnable tokens of its
prompt. With the cosine cost ``C_mn = 1 - f_m . p_n`` (unit vectors) and uniform marginals,
the Sinkhorn distance (eq. 13-17, ``lambda = epsilon = 0.1``, at most 50 iterations)

    d_OT(l) = <T*, C>,   T* = argmin <T, C> - lambda h(T)  s.t.  T 1 = 1/M, T^T 1 = 1/N,

gives the class probabilities (eq. 18) and the loss (eq. 19)::

    logits_l = (1 - d_OT(l)) / tau,     L_otce = CE(softmax(logits), y_x).

Eq. 19 as printed, ``-1/|X| sum_x sum_l y_x p(y = l | x)``, lacks the logarithm of a
cross-entropy (it would maximise the probability rather than its log); the cross-entropy is
implemented.

The softmax of eq. 18 runs over all ``L`` identities, so every step needs the token features
of every identity's prompt: :func:`reidkit.prompts.encode_class_prompts` encodes them in one
pass (its sentence features serve the contrastive losses of eq. 20). The distances come from
:func:`reidkit.ot.pairwise_ot_distance`, which solves the ``B x L`` problems chunk by chunk (or
in the fused Triton kernel on CUDA) and keeps only the potentials for the backward pass.
Neither changes the objective.
"""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from reidkit import checks
from reidkit._deprecation import moved_names
from reidkit.ot import pairwise_ot_distance, validation
from reidkit.ot.sinkhorn import Backend, GradMode, StopRule


class AlignmentOutput(NamedTuple):
    """Outputs of :class:`PatchToTokenAlignment`.

    Attributes:
        logits: ``(B, L)`` ``(1 - d_OT) / tau`` (eq. 18 before the softmax).
        loss: scalar cross-entropy ``L_otce`` (eq. 19, with its logarithm).
    """

    logits: Tensor
    loss: Tensor


class PatchToTokenAlignment(nn.Module):
    """Sinkhorn distances between patch sets and token sets, as logits and ``L_otce``.

    Args:
        temperature: ``tau`` of eq. 18 (the paper leaves it open; 0.07 is CLIP's initial
            temperature).
        epsilon: entropic regularisation ``lambda`` (paper: 0.1).
        max_iter: Sinkhorn iteration cap (paper: 50).
        tol: stopping threshold; ``None`` runs ``max_iter`` iterations.
        stop_rule: ``"marginal"`` (row-marginal error, accurate gradients) or ``"update"``, the
            paper's rule (stop when the mean absolute scaling update is below ``tol = 0.05``).
        grad: gradient mode of :func:`reidkit.ot.pairwise_ot_distance`.
        backend: ``"auto"`` (the fused Triton kernel on CUDA when supported), ``"torch"`` or
            ``"triton"``.
        class_chunk_size: identities per chunk on the torch path (``None``: automatic).
    """

    def __init__(
        self,
        temperature: float = 0.07,
        epsilon: float = 0.1,
        max_iter: int = 50,
        tol: float | None = 1e-3,
        stop_rule: StopRule = "marginal",
        grad: GradMode = "implicit",
        backend: Backend = "auto",
        class_chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        checks.check_number("temperature", temperature, above=0)
        validation.check_solver_options(epsilon, max_iter, tol, grad, backend, stop_rule)
        self.temperature = temperature
        self.epsilon = epsilon
        self.max_iter = max_iter
        self.tol = tol
        self.stop_rule = stop_rule
        self.grad = grad
        self.backend = backend
        self.class_chunk_size = class_chunk_size

    def distances(self, patches: Tensor, tokens: Tensor) -> Tensor:
        """Sinkhorn distances ``d_OT`` ``(B, L)`` (eq. 13-17) under the cosine cost.

        Args:
            patches: ``(B, M, E)`` selected patch features (normalised here).
            tokens: ``(L, N, E)`` learnable-token features of every identity (normalised here).
        """
        return pairwise_ot_distance(
            F.normalize(patches, dim=-1),
            F.normalize(tokens, dim=-1),
            epsilon=self.epsilon,
            max_iter=self.max_iter,
            tol=self.tol,
            grad=self.grad,
            backend=self.backend,
            stop_rule=self.stop_rule,
            chunk_size=self.class_chunk_size,
        )

    def logits(self, patches: Tensor, tokens: Tensor) -> Tensor:
        """``(1 - d_OT) / tau`` ``(B, L)``, the logits of eq. 18."""
        return (1 - self.distances(patches, tokens)) / self.temperature

    def forward(self, patches: Tensor, tokens: Tensor, labels: Tensor) -> AlignmentOutput:
        """Logits over all identities and the cross-entropy ``L_otce`` (eq. 18-19).

        Args:
            patches: ``(B, M, E)`` selected patch features of each image.
            tokens: ``(L, N, E)`` learnable-token features of each identity's prompt.
            labels: ``(B,)`` identities in ``[0, L)``.

        Returns:
            :class:`AlignmentOutput`.
        """
        if labels.shape != (patches.shape[0],) or labels.is_floating_point():
            raise ValueError(
                f"labels must be integer identities of shape ({patches.shape[0]},), got "
                f"{labels.dtype} of shape {tuple(labels.shape)}"
            )
        logits = self.logits(patches, tokens)
        return AlignmentOutput(logits, F.cross_entropy(logits, labels))

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, epsilon={self.epsilon}, max_iter={self.max_iter}, "
            f"tol={self.tol}, stop_rule={self.stop_rule!r}, grad={self.grad!r}, "
            f"backend={self.backend!r}"
        )


__getattr__ = moved_names(
    __name__,
    {
        "ClassPromptFeatures": "reidkit.prompts.ClassPromptFeatures",
        "encode_class_prompts": "reidkit.prompts.encode_class_prompts",
    },
)
