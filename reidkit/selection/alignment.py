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
:func:`reidkit.ot.pairwise_ot_distance` with the cosine cost of
:class:`reidkit.distances.CosineDistance`, which solves the ``B x L`` problems chunk by chunk
(or in the fused Triton kernel on CUDA) and keeps only the potentials for the backward pass.
Neither changes the objective.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from reidkit import checks
from reidkit._deprecation import moved_names
from reidkit.distances import CosineDistance
from reidkit.ot import pairwise_ot_distance
from reidkit.ot.options import SinkhornOptions, consumer_options

ALIGNMENT_OPTIONS = SinkhornOptions(epsilon=0.1, max_iter=50, tol=1e-3)
"""The default solver settings of :class:`PatchToTokenAlignment`: MMPL's ``lambda = 0.1`` and
50 iterations, with the marginal stop rule (``stop_rule="update", tol=0.05`` is the paper's)."""

# The solver keywords the module took before ``options``, each setting the field of its name.
_OLD_KEYWORDS = {
    name: name for name in ("epsilon", "max_iter", "tol", "stop_rule", "grad", "backend")
}


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
        options: the Sinkhorn settings, a :class:`~reidkit.ot.SinkhornOptions`; default
            :data:`ALIGNMENT_OPTIONS` (``epsilon = lambda = 0.1``, at most 50 iterations, the
            marginal rule with ``tol=1e-3``, which gives accurate gradients;
            ``stop_rule="update", tol=0.05`` is the paper's rule). Its ``on_nonconvergence``
            says what a problem stopped at ``max_iter`` causes.
        class_chunk_size: identities per chunk on the torch path (``None``: automatic).
        **deprecated: ``epsilon``, ``max_iter``, ``tol``, ``stop_rule``, ``grad`` and
            ``backend`` as keywords, as before ``options`` (deprecated: they set the fields of
            ``options`` and warn once).

    Attributes:
        options: the :class:`~reidkit.ot.SinkhornOptions` of every forward pass.
        distance: the ground cost, :class:`~reidkit.distances.CosineDistance` (eq. 13).
    """

    def __init__(
        self,
        temperature: float = 0.07,
        *,
        options: SinkhornOptions = ALIGNMENT_OPTIONS,
        class_chunk_size: int | None = None,
        **deprecated: Any,
    ) -> None:
        super().__init__()
        checks.check_number("temperature", temperature, above=0)
        checks.check_integer("class_chunk_size", class_chunk_size, 1, optional=True)
        self.options = consumer_options(
            "reidkit.PatchToTokenAlignment", options, deprecated, _OLD_KEYWORDS
        )
        self.temperature = temperature
        self.distance = CosineDistance()
        self.class_chunk_size = class_chunk_size

    def distances(self, patches: Tensor, tokens: Tensor) -> Tensor:
        """Sinkhorn distances ``d_OT`` ``(B, L)`` (eq. 13-17) under the cosine cost.

        Args:
            patches: ``(B, M, E)`` selected patch features (normalised by the cost).
            tokens: ``(L, N, E)`` learnable-token features of every identity (normalised by the
                cost).
        """
        return pairwise_ot_distance(
            patches,
            tokens,
            distance=self.distance,
            options=self.options,
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
        return f"temperature={self.temperature}, options={self.options!r}"


__getattr__ = moved_names(
    __name__,
    {
        "ClassPromptFeatures": "reidkit.prompts.ClassPromptFeatures",
        "encode_class_prompts": "reidkit.prompts.encode_class_prompts",
    },
)
