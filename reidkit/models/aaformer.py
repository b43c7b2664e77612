"""AAformer's ReID model (paper 001): the [PART]-token transformer with its training heads.

:class:`reidkit.AAformer` turns a ViT into the auto-aligned transformer (CLS and [PART]
tokens, OT patch assignment); :class:`reidkit.parts.AAformerLoss` holds one BNNeck and
classifier per output token and the losses of eq. 6-8. :class:`AAformerReID` puts them in one
module, so that the heads are trained (and wrapped by ``DistributedDataParallel``) with the
transformer.
"""

from __future__ import annotations

from torch import Tensor, nn

from reidkit.parts import AAformer, AAformerLoss
from reidkit.parts.objective import AAformerLossOutput


class AAformerReID(nn.Module):
    """AAformer with its training heads.

    ``forward(images, pids)`` returns the loss terms of eq. 6-8 (:class:`AAformerLossOutput`);
    ``forward(images)`` the retrieval feature ``(B, (1 + P) C)``, the CLS and [PART] tokens
    concatenated (sec. III-C), compared by Euclidean distance.

    Args:
        aaformer: the converted transformer.
        criterion: its heads and losses; ``criterion.necks`` must hold one neck per output
            token of ``aaformer``.

    Shapes:
        images ``(B, 3, H, W)`` at the backbone's image size; pids ``(B,)``.
    """

    def __init__(self, aaformer: AAformer, criterion: AAformerLoss) -> None:
        super().__init__()
        if len(criterion.necks) != 1 + aaformer.num_parts:
            raise ValueError(
                f"criterion must have one neck per output token (1 + {aaformer.num_parts}), "
                f"got {len(criterion.necks)}"
            )
        self.aaformer = aaformer
        self.criterion = criterion

    def forward(self, images: Tensor, pids: Tensor | None = None) -> Tensor | AAformerLossOutput:
        features = self.aaformer(images)
        if pids is None:
            return features.concatenated()
        return self.criterion(features.tokens, pids)
