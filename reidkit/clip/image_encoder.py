"""CLIP's ViT image encoder with every feature ReID heads need and optional visual prompts.

Besides the projected global feature ``V = I(I)`` (MMPL eq. 1) that ``encode_image`` returns,
person ReID uses the class token before the projection (for BNNeck and ID heads), the patch
tokens as a spatial map (for part and patch-level alignment), intermediate layers, the
class token's attention to the patches in the last block (MMPL's agent-free patch ranking) and
every block's attention (the input of :func:`reidkit.explain.attention_rollout`).
Visual prompts ``P_v`` (MMPL eq. 21) are extra tokens that join the sequence
``[CLS, patches, prompts]`` before ``ln_pre`` and take part in every attention layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from open_clip.transformer import VisionTransformer
from torch import Tensor, nn

from reidkit.clip.transformer import check_layer_indices, run_transformer


@dataclass
class ImageFeatures:
    """Outputs of :class:`CLIPImageEncoder` for a batch of ``B`` images on an ``h x w`` grid.

    Attributes:
        embedding: ``(B, embed_dim)`` projected class token, equal to ``encode_image``.
        cls: ``(B, width)`` class token after ``ln_post``, before the projection.
        patches: ``(B, h, w, width)`` patch tokens after ``ln_post`` (prompts dropped).
        projected_patches: ``(B, h, w, embed_dim)`` the patch tokens through the projection.
        layers: outputs of the requested blocks, each ``(B, 1 + h * w + K, width)`` with the
            ``K`` prompt tokens last, in the order of ``return_layers``.
    """

    embedding: Tensor
    cls: Tensor
    patches: Tensor
    projected_patches: Tensor
    layers: tuple[Tensor, ...]


class CLIPImageEncoder(nn.Module):
    """The vision transformer of an open_clip CLIP model, returning :class:`ImageFeatures`.

    Only class-token pooling ViTs are supported (the CLIP ViTs), without patch dropout or
    attentional pooling. The encoder holds ``clip_model.visual`` (shared, not copied), so a later
    :func:`~reidkit.clip.resize.resize_visual_grid` is seen by it.

    Args:
        clip_model: an open_clip ``CLIP`` or ``CustomTextCLIP`` with a ViT vision tower.
        return_layers: indices of the residual blocks whose outputs to return (negative indices
            count from the end).
        checkpoint_activations: recompute each block in the backward pass to save memory.
    """

    def __init__(
        self,
        clip_model: nn.Module,
        return_layers: Sequence[int] = (),
        checkpoint_activations: bool = False,
    ) -> None:
        super().__init__()
        visual = clip_model.visual
        if not isinstance(visual, VisionTransformer):
            raise ValueError(
                f"clip_model must have a ViT vision tower, got {type(visual).__name__}"
            )
        if visual.attn_pool is not None or visual.pool_type != "tok":
            raise ValueError(
                "clip_model: only class-token pooling is supported, got "
                f"pool_type={visual.pool_type!r} with attentional pooling "
                f"{visual.attn_pool is not None}"
            )
        if not isinstance(visual.patch_dropout, nn.Identity):
            raise ValueError("clip_model: patch dropout is not supported; build it with 0")
        self.visual = visual
        self.return_layers = check_layer_indices(visual.transformer, return_layers)
        self.checkpoint_activations = checkpoint_activations

    def forward(self, images: Tensor, prompts: Tensor | None = None) -> ImageFeatures:
        """Encode images, optionally with visual prompt tokens.

        Args:
            images: ``(B, C, H, W)`` at the tower's ``image_size``.
            prompts: ``(B, K, width)`` extra tokens appended after the patch tokens, or ``None``.

        Returns:
            :class:`ImageFeatures`.
        """
        visual = self.visual
        conv = visual.conv1
        if images.dim() != 4 or images.shape[1] != conv.in_channels:
            raise ValueError(
                f"images must have shape (B, {conv.in_channels}, H, W), got {tuple(images.shape)}"
            )
        x = conv(images.to(conv.weight.dtype))
        batch, width, grid_h, grid_w = x.shape
        if (grid_h, grid_w) != tuple(visual.grid_size):
            raise ValueError(
                f"images must be {tuple(visual.image_size)} (H, W) for the {visual.grid_size} "
                f"patch grid, got {tuple(images.shape[2:])}"
            )
        class_token = visual.class_embedding.view(1, 1, width).expand(batch, -1, -1)
        x = torch.cat([class_token.to(x.dtype), x.flatten(2).transpose(1, 2)], dim=1)
        x = x + visual.positional_embedding.to(x.dtype)
        if prompts is not None:
            if prompts.dim() != 3 or prompts.shape[0] != batch or prompts.shape[2] != width:
                raise ValueError(
                    f"prompts must have shape ({batch}, K, {width}), got {tuple(prompts.shape)}"
                )
            x = torch.cat([x, prompts.to(x.dtype)], dim=1)
        x = visual.ln_pre(x)
        x, layers = run_transformer(
            visual.transformer,
            x,
            return_layers=self.return_layers,
            checkpoint_activations=self.checkpoint_activations,
        )
        x = visual.ln_post(x)
        cls = x[:, 0]
        patches = x[:, 1 : 1 + grid_h * grid_w].reshape(batch, grid_h, grid_w, width)
        return ImageFeatures(
            embedding=self._project(cls),
            cls=cls,
            patches=patches,
            projected_patches=self._project(patches),
            layers=layers,
        )

    def class_token_attention(self, features: ImageFeatures) -> Tensor:
        """Head-averaged attention of the class token to each patch in the last block.

        The last block's attention is recomputed from its input, the output of the block
        before it, so the encoder must return that layer (``return_layers`` holding ``-2``, as
        :class:`reidkit.models.CLIPReIDModel`'s encoder does).

        Args:
            features: this encoder's output for a batch of ``B`` images.

        Returns:
            ``(B, h, w, 1)`` attention weights on the patch grid (each image's weights over
            all its tokens sum to 1).
        """
        blocks = self.visual.transformer.resblocks
        before_last = len(blocks) - 2
        if before_last not in self.return_layers:
            raise ValueError(
                "class_token_attention needs the output of the block before the last: build "
                f"the encoder with -2 among its return_layers, got {self.return_layers}"
            )
        block_input = features.layers[self.return_layers.index(before_last)]
        return class_token_attention(blocks[-1], block_input, tuple(self.visual.grid_size))

    def attention_weights(
        self, images: Tensor, prompts: Tensor | None = None
    ) -> tuple[Tensor, ...]:
        """Every block's head-averaged attention for a batch of images.

        Args:
            images: ``(B, C, H, W)`` as :meth:`forward` takes them.
            prompts: ``(B, K, width)`` visual prompt tokens, or ``None``.

        Returns:
            One ``(B, N, N)`` tensor per block, ``N = 1 + h * w + K`` tokens in the order
            ``[CLS, patches, prompts]``; row ``i`` is token ``i``'s attention over all tokens
            (it sums to 1).
        """
        transformer = self.visual.transformer
        sequence_first = not getattr(transformer, "batch_first", False)
        inputs: list[Tensor] = []

        def keep_input(block: nn.Module, args: tuple[Tensor, ...]) -> None:
            inputs.append(args[0].transpose(0, 1) if sequence_first else args[0])

        handles = [block.register_forward_pre_hook(keep_input) for block in transformer.resblocks]
        try:
            self(images, prompts)
        finally:
            for handle in handles:
                handle.remove()
        blocks = transformer.resblocks
        return tuple(
            block_attention(block, tokens, tokens) for block, tokens in zip(blocks, inputs)
        )

    def _project(self, features: Tensor) -> Tensor:
        projection = self.visual.proj
        return features if projection is None else features @ projection


def class_token_attention(block: nn.Module, tokens: Tensor, map_size: tuple[int, int]) -> Tensor:
    """Head-averaged attention of the class token to each patch token in ``block``.

    Args:
        block: an open_clip ``ResidualAttentionBlock`` (with ``ln_1`` and an
            ``nn.MultiheadAttention`` ``attn``), batch first or sequence first.
        tokens: ``(B, 1 + h * w + K, width)`` input of ``block``, batch first, class token
            first and any ``K`` prompt tokens last.
        map_size: ``(h, w)`` of the patch grid.

    Returns:
        ``(B, h, w, 1)`` attention weights (each image's weights over all tokens sum to 1).
    """
    height, width = map_size
    if tokens.dim() != 3 or tokens.shape[1] < 1 + height * width:
        raise ValueError(
            f"tokens must have shape (B, >= {1 + height * width}, width), got {tuple(tokens.shape)}"
        )
    weights = block_attention(block, tokens[:, :1], tokens)
    patch_weights = weights[:, 0, 1 : 1 + height * width]
    return patch_weights.reshape(tokens.shape[0], height, width, 1)


def block_attention(block: nn.Module, queries: Tensor, tokens: Tensor) -> Tensor:
    """Head-averaged attention of ``queries`` over ``tokens`` in ``block``.

    Args:
        block: an open_clip ``ResidualAttentionBlock`` (with ``ln_1`` and an
            ``nn.MultiheadAttention`` ``attn``), batch first or sequence first.
        queries: ``(B, Q, width)`` tokens of the block's input that attend, batch first.
        tokens: ``(B, N, width)`` the block's input, batch first.

    Returns:
        ``(B, Q, N)`` softmax weights averaged over the heads (each row sums to 1).
    """
    attention = cast(nn.MultiheadAttention, block.attn)
    norm = cast(nn.Module, block.ln_1)
    normed_queries: Tensor = norm(queries)
    normed: Tensor = norm(tokens)
    if not attention.batch_first:
        normed_queries, normed = normed_queries.transpose(0, 1), normed.transpose(0, 1)
    weights: Tensor
    _, weights = attention(
        normed_queries, normed, normed, need_weights=True, average_attn_weights=True
    )
    return weights
