"""UniPT's embedding head: project every token, then max-pool over the valid tokens (sec. 4.1).

"We attach a 1x1 convolution layer to the visual and textual encoder respectively to project
the image and text features into the same dimension. Subsequently, we conduct a max-pooling
operation on both the visual and textual features to obtain the global embeddings of V and
T." For a sequence of ``L`` token features ``h_1..h_L`` (an image's class and patch tokens, a
sentence's tokens up to its end of text):

.. math::

    e_l = W h_l + b, \\qquad v_d = \\max_{l\\ \\mathrm{valid}} e_{l, d},

a 1x1 convolution over the tokens being a linear map applied to each.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reidkit import checks


class TokenMaxPoolEmbedding(nn.Module):
    """A linear projection of every token and the maximum over the valid ones, per dimension.

    Args:
        in_features: the token width of the encoder.
        out_features: the joint embedding dimension of both modalities.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        checks.check_integer("in_features", in_features, 1)
        checks.check_integer("out_features", out_features, 1)
        self.projection = nn.Linear(in_features, out_features)

    def forward(self, tokens: Tensor, valid: Tensor | None = None) -> Tensor:
        """Embed a batch of token sequences.

        Args:
            tokens: ``(B, L, in_features)`` token features.
            valid: ``(B, L)`` bool, the tokens to pool over (each row needs one; for text,
                :meth:`~reidkit.clip.CLIPTextEncoder.valid_token_mask`); ``None``: all.

        Returns:
            ``(B, out_features)`` embeddings. The gradient of a maximum reaches the token that
            attains it (shared equally between tied tokens).
        """
        width = self.projection.in_features
        if not isinstance(tokens, Tensor) or tokens.dim() != 3 or tokens.shape[2] != width:
            raise ValueError(
                f"tokens must have shape (B, L, {width}), got {checks.describe(tokens)}"
            )
        projected: Tensor = self.projection(tokens)
        if valid is None:
            return projected.amax(dim=1)
        if valid.shape != tokens.shape[:2] or valid.dtype != torch.bool:
            raise ValueError(
                f"valid must be a bool tensor of shape {tuple(tokens.shape[:2])}, got "
                f"{checks.describe(valid)}"
            )
        if not bool(valid.any(dim=1).all()):
            raise ValueError("valid must mark at least one token in every row")
        return projected.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(dim=1)
