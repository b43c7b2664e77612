"""Pretrained ViTs converted for [PART] tokens: timm's VisionTransformer and open_clip's tower.

Each adapter exposes the four stages AAformer needs, all taken from the wrapped model so that
the pretrained computation is reused exactly: the token embedding (patches, prefix tokens,
position embeddings and the pre-norm), the per-token pre-norm alone (for the [PART] tokens),
the residual blocks, and the per-token output norm (and projection). Conversion replaces the
attention of every block by a :class:`~reidkit.parts.PartTokenAttention` that shares the
pretrained ``qkv`` and output-projection parameters.

The embedding stage calls the libraries' own (private) methods, timm's
``VisionTransformer._pos_embed`` and open_clip's ``VisionTransformer._embeds``, so that class
tokens, register tokens and position embeddings are handled exactly as the libraries do.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import partial
from typing import Any, cast

from torch import Tensor, nn

from reidkit.parts.attention import PartTokenAttention

AttentionFactory = Callable[..., PartTokenAttention]


class ViTAdapter(nn.Module, ABC):
    """Common interface of the wrapped ViTs, sequences ``(B, L, width)`` batch first.

    Attributes:
        width: token width inside the blocks.
        output_dim: width of the features returned by :meth:`finalize`.
        num_prefix_tokens: tokens before the patches (the CLS token first).
        grid_size: ``(h, w)`` patch grid of the expected image size.
    """

    width: int
    output_dim: int
    num_prefix_tokens: int
    grid_size: tuple[int, int]

    @abstractmethod
    def embed(self, images: Tensor) -> Tensor:
        """``(B, C, H, W)`` images to ``(B, prefix + N, width)`` tokens after the pre-norm."""

    @abstractmethod
    def pre_norm(self, tokens: Tensor) -> Tensor:
        """The per-token norm applied to the embeddings before the first block."""

    @abstractmethod
    def run_blocks(self, tokens: Tensor) -> Tensor:
        """Apply every residual block to ``(B, L, width)`` tokens."""

    @abstractmethod
    def finalize(self, tokens: Tensor) -> Tensor:
        """Per-token output norm (and projection): ``(B, T, width) -> (B, T, output_dim)``."""


class TimmViT(ViTAdapter):
    """A timm ``VisionTransformer`` with class token; its features are ``norm`` outputs."""

    def __init__(self, vit: Any, make_attention: AttentionFactory) -> None:
        super().__init__()
        if vit.cls_token is None:
            raise ValueError("backbone: the timm VisionTransformer must have a class token")
        self.vit = vit
        self.width = vit.embed_dim
        self.output_dim = vit.embed_dim
        self.num_prefix_tokens = vit.num_prefix_tokens
        self.grid_size = tuple(vit.patch_embed.grid_size)
        for index, block in enumerate(vit.blocks):
            block.attn = _convert_timm_attention(
                block.attn,
                index,
                partial(
                    make_attention,
                    num_prefix_tokens=self.num_prefix_tokens,
                    grid_size=self.grid_size,
                ),
            )

    def embed(self, images: Tensor) -> Tensor:
        vit = self.vit
        return cast(Tensor, vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images)))))

    def pre_norm(self, tokens: Tensor) -> Tensor:
        return cast(Tensor, self.vit.norm_pre(tokens))

    def run_blocks(self, tokens: Tensor) -> Tensor:
        return cast(Tensor, self.vit.blocks(tokens))

    def finalize(self, tokens: Tensor) -> Tensor:
        return cast(Tensor, self.vit.norm(tokens))


class OpenCLIPViT(ViTAdapter):
    """open_clip's ``VisionTransformer`` (class-token pooling, no attentional pooling).

    Its features are ``ln_post`` outputs through the tower's projection when it has one, so the
    class-token feature equals CLIP's image embedding.
    """

    def __init__(
        self, visual: Any, make_attention: AttentionFactory, checkpoint_activations: bool
    ) -> None:
        super().__init__()
        if visual.attn_pool is not None or visual.pool_type != "tok":
            raise ValueError(
                "backbone: only class-token pooling is supported, got "
                f"pool_type={visual.pool_type!r} with attentional pooling "
                f"{visual.attn_pool is not None}"
            )
        if not isinstance(visual.patch_dropout, nn.Identity):
            raise ValueError("backbone: patch dropout is not supported; build it with 0")
        self.visual = visual
        self.checkpoint_activations = checkpoint_activations
        self.width = visual.transformer.width
        self.output_dim = self.width if visual.proj is None else visual.proj.shape[1]
        self.num_prefix_tokens = 1
        self.grid_size = tuple(visual.grid_size)
        batch_first = getattr(visual.transformer, "batch_first", False)
        for index, block in enumerate(visual.transformer.resblocks):
            block.attn = MultiheadAttentionInterface(
                _convert_multihead_attention(
                    block.attn,
                    index,
                    partial(make_attention, num_prefix_tokens=1, grid_size=self.grid_size),
                ),
                batch_first,
            )

    def embed(self, images: Tensor) -> Tensor:
        return cast(Tensor, self.visual._embeds(images))

    def pre_norm(self, tokens: Tensor) -> Tensor:
        return cast(Tensor, self.visual.ln_pre(tokens))

    def run_blocks(self, tokens: Tensor) -> Tensor:
        from reidkit.clip.transformer import run_transformer

        tokens, _ = run_transformer(
            self.visual.transformer,
            tokens,
            checkpoint_activations=self.checkpoint_activations,
        )
        return tokens

    def finalize(self, tokens: Tensor) -> Tensor:
        tokens = self.visual.ln_post(tokens)
        return tokens if self.visual.proj is None else tokens @ self.visual.proj


class MultiheadAttentionInterface(nn.Module):
    """Calls a :class:`PartTokenAttention` the way open_clip calls ``nn.MultiheadAttention``.

    Only self-attention (``query is key is value``) without returned weights is supported;
    sequence-first tokens ``(L, B, D)`` are transposed when ``batch_first`` is ``False``.
    """

    def __init__(self, attention: PartTokenAttention, batch_first: bool) -> None:
        super().__init__()
        self.attention = attention
        self.batch_first = batch_first

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        need_weights: bool = False,
        attn_mask: Tensor | None = None,
        **unused: Any,
    ) -> tuple[Tensor, None]:
        if key is not query or value is not query or need_weights:
            raise ValueError(
                "[PART] attention supports self-attention only (query is key is value, "
                "need_weights=False)"
            )
        tokens = query if self.batch_first else query.transpose(0, 1)
        out = self.attention(tokens, attn_mask=attn_mask)
        return (out if self.batch_first else out.transpose(0, 1)), None


def wrap_backbone(
    backbone: nn.Module, make_attention: AttentionFactory, checkpoint_activations: bool = False
) -> ViTAdapter:
    """Convert ``backbone`` in place and wrap it in its :class:`ViTAdapter`.

    Args:
        backbone: a timm ``VisionTransformer``, an open_clip ``VisionTransformer``, or an
            open_clip CLIP model (its ``visual`` tower is used).
        make_attention: ``(dim, num_heads, qkv=..., proj=..., qkv_bias=..., attn_drop=...,
            proj_drop=..., num_prefix_tokens=..., grid_size=...) -> PartTokenAttention``.
        checkpoint_activations: recompute open_clip blocks in the backward pass.
    """
    from open_clip.transformer import VisionTransformer as OpenCLIPVisionTransformer
    from timm.models.vision_transformer import VisionTransformer as TimmVisionTransformer

    visual = getattr(backbone, "visual", backbone)
    if isinstance(visual, OpenCLIPVisionTransformer):
        return OpenCLIPViT(visual, make_attention, checkpoint_activations)
    if isinstance(backbone, TimmVisionTransformer):
        return TimmViT(backbone, make_attention)
    raise ValueError(
        "backbone must be a timm VisionTransformer, an open_clip VisionTransformer or an "
        f"open_clip CLIP model, got {type(backbone).__name__}"
    )


def _convert_timm_attention(
    attention: Any, index: int, make_attention: AttentionFactory
) -> PartTokenAttention:
    """Reuse the ``qkv`` and ``proj`` layers of a plain timm ``Attention``."""
    plain = (
        all(
            isinstance(getattr(attention, name, nn.Identity()), nn.Identity)
            for name in ("q_norm", "k_norm", "norm")
        )
        and getattr(attention, "gate", None) is None
        and isinstance(getattr(attention, "qkv", None), nn.Linear)
        and attention.qkv.out_features == 3 * attention.qkv.in_features
    )
    if not plain:
        raise ValueError(
            f"backbone: block {index} attention must be timm's plain Attention (qkv and proj "
            f"linear layers, no q/k norm, gate or head-dim override), got {attention!r}"
        )
    return make_attention(
        attention.qkv.in_features,
        attention.num_heads,
        qkv=attention.qkv,
        proj=attention.proj,
        qkv_bias=attention.qkv.bias is not None,
        attn_drop=attention.attn_drop.p,
        proj_drop=attention.proj_drop.p,
    )


def _convert_multihead_attention(
    attention: nn.Module, index: int, make_attention: AttentionFactory
) -> PartTokenAttention:
    """Share the packed input projection and ``out_proj`` of an ``nn.MultiheadAttention``."""
    if (
        not isinstance(attention, nn.MultiheadAttention)
        or not attention._qkv_same_embed_dim
        or attention.bias_k is not None
        or attention.add_zero_attn
    ):
        raise ValueError(
            f"backbone: block {index} attention must be an nn.MultiheadAttention with a packed "
            f"input projection, no bias_k/bias_v and no zero attention, got {attention!r}"
        )
    dim = attention.embed_dim
    qkv = nn.Linear(dim, 3 * dim, bias=attention.in_proj_bias is not None, device="meta")
    qkv.weight = attention.in_proj_weight
    if attention.in_proj_bias is not None:
        qkv.bias = attention.in_proj_bias
    return make_attention(
        dim,
        attention.num_heads,
        qkv=qkv,
        proj=attention.out_proj,
        qkv_bias=attention.in_proj_bias is not None,
        attn_drop=attention.dropout,
        proj_drop=0.0,
    )
