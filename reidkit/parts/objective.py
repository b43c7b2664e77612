"""AAformer's training objective (sec. III-C, eq. 6-8).

Every output token ``Z_i`` (the CLS token ``Z_0`` and the [PART]s ``Z_1:P``) has its own
BNNeck and classifier (not shared). The loss is

    L_cls = 1 / (P + 1) sum_i CE_ls(W_i BN_i(Z_i), y)                         (eq. 6)
    L_tri = 1/2 (triplet(Z_0) + triplet([Z_1, .., Z_P]))                      (eq. 7)
    L     = L_cls + L_tri                                                     (eq. 8)

with label-smoothed cross-entropy ``CE_ls`` and batch-hard triplet losses of margin 0.3, the
hardest pairs mined separately on the global feature and on the concatenated [PART]s.
"""

from __future__ import annotations

from typing import NamedTuple, cast

from torch import Tensor, nn

from reidkit import checks
from reidkit.heads import BNNeck
from reidkit.losses import CrossEntropyLabelSmooth, TripletLoss


class AAformerLossOutput(NamedTuple):
    """Terms of :class:`AAformerLoss`, each a scalar.

    Attributes:
        loss: ``L = L_cls + L_tri`` (eq. 8).
        id_loss: ``L_cls`` (eq. 6).
        triplet_loss: ``L_tri`` (eq. 7).
    """

    loss: Tensor
    id_loss: Tensor
    triplet_loss: Tensor


class AAformerLoss(nn.Module):
    """Per-token BNNeck heads with the ID and triplet losses of AAformer (eq. 6-8).

    Args:
        feature_dim: width ``C`` of each token.
        num_tokens: ``1 + P`` (CLS and [PART]s). With a single token the triplet term is the
            global triplet alone.
        num_classes: training identities.
        label_smoothing: smoothing of the cross-entropy (0.1 as in BoT).
        margin: triplet margin ``alpha`` (0.3 in the paper).
    """

    def __init__(
        self,
        feature_dim: int,
        num_tokens: int,
        num_classes: int,
        *,
        label_smoothing: float = 0.1,
        margin: float = 0.3,
    ) -> None:
        super().__init__()
        checks.check_integer("num_tokens", num_tokens, 1)
        self.necks = nn.ModuleList(BNNeck(feature_dim, num_classes) for _ in range(num_tokens))
        self.id_loss = CrossEntropyLabelSmooth(label_smoothing, num_classes)
        self.triplet = TripletLoss(margin)

    def forward(self, tokens: Tensor, labels: Tensor) -> AAformerLossOutput:
        """Loss of the output tokens ``(B, 1 + P, C)`` for identities ``labels`` ``(B,)``."""
        expected = (len(self.necks), cast(BNNeck, self.necks[0]).bn.num_features)
        if tokens.dim() != 3 or tuple(tokens.shape[1:]) != expected:
            raise ValueError(
                f"tokens must have shape (B, {expected[0]}, {expected[1]}), "
                f"got {tuple(tokens.shape)}"
            )
        id_losses = [
            self.id_loss(neck(tokens[:, index]).logits, labels)
            for index, neck in enumerate(self.necks)
        ]
        id_loss = sum(id_losses) / len(id_losses)
        triplet_loss = self.triplet(tokens[:, 0], labels)
        if tokens.shape[1] > 1:
            part_triplet = self.triplet(tokens[:, 1:].flatten(1), labels)
            triplet_loss = (triplet_loss + part_triplet) / 2
        return AAformerLossOutput(id_loss + triplet_loss, id_loss, triplet_loss)
