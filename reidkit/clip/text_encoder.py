"""CLIP's text encoder applied to token embeddings, so that prompts can hold learnable vectors.

``CLIP.encode_text`` starts from token ids. Prompt learning (CoOp, CLIP-ReID, MMPL) replaces
some token embeddings by learned vectors, so :class:`CLIPTextEncoder` starts one step later:
from the embeddings ``(B, L, width)``, with the token ids kept only to locate the
end-of-text token whose output is the sentence feature ``T = T(P_t)`` (MMPL eq. 1).

CLIP's text transformer is causal: a token sees only the tokens before it. Masked language
modelling (UniPT eq. 2) predicts a masked word from both sides, so the encoder also runs
bidirectionally (``causal=False``): every token attends to every token up to the end of text,
and never to the padding after it. Both modes return the hidden states before the projection
(``TextFeatures.hidden``), the input of heads of their own (UniPT's token projection, an MLM
head).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from reidkit import checks
from reidkit.clip.transformer import run_transformer

POOL_TYPES = ("argmax", "eos", "first", "last")
_TEXT_ATTRIBUTES = ("token_embedding", "positional_embedding", "transformer", "ln_final")


class TextFeatures(NamedTuple):
    """Outputs of :class:`CLIPTextEncoder`.

    Attributes:
        sentence: ``(B, embed_dim)`` projected feature of the pooled (end-of-text) token.
        tokens: ``(B, L, embed_dim)`` every token's output after the final layer norm and the
            projection; ``tokens[:, positions]`` are the outputs of learnable prompt tokens.
        hidden: ``(B, L, width)`` every token's output after the final layer norm, before the
            projection.
    """

    sentence: Tensor
    tokens: Tensor
    hidden: Tensor


def text_tower(clip_model: nn.Module) -> Any:
    """The module that holds a CLIP model's text transformer and its embeddings.

    open_clip keeps them on the model itself (``CLIP``) or on ``model.text``
    (``CustomTextCLIP`` with a CLIP-style ``TextTransformer``).

    Args:
        clip_model: an open_clip ``CLIP`` or ``CustomTextCLIP``.

    Returns:
        The model or its ``text`` submodule (open_clip's modules carry no type information).
    """
    text = getattr(clip_model, "text", None)
    tower = text if isinstance(text, nn.Module) else clip_model
    missing = [name for name in _TEXT_ATTRIBUTES if not hasattr(tower, name)]
    if missing:
        raise ValueError(
            f"clip_model must have a CLIP transformer text tower; {type(tower).__name__} lacks "
            f"{missing}"
        )
    if getattr(tower, "cls_emb", None) is not None or getattr(tower, "use_pad_mask", False):
        raise ValueError(
            "clip_model: text towers with an appended class token or padding masks are not "
            "supported"
        )
    return tower


class CLIPTextEncoder(nn.Module):
    """CLIP's text transformer from token embeddings to sentence and token features.

    Runs ``x + positional embedding``, the causal transformer, ``ln_final``, pooling at the
    end-of-text token (the argmax of the ids for CLIP's tokenizer) and the text projection, as
    ``clip_model.encode_text`` does after its token lookup. The encoder shares (does not copy)
    the model's parameters.

    With ``causal=False`` the transformer runs without the causal mask: every token attends to
    every position up to the end-of-text token of its sentence (:meth:`valid_token_mask`), so
    that a masked word is predicted from both sides (BERT, UniPT eq. 2), and no output depends
    on the padding. The positions after the end of text are found from the pooled position,
    not from a padding id (CLIP pads with id 0, which is also the token ``"!"``), so this mode
    needs ``"argmax"`` or ``"eos"`` pooling.

    Args:
        clip_model: an open_clip ``CLIP`` or ``CustomTextCLIP`` with a transformer text tower;
            any width, projection as a ``Parameter`` or an ``nn.Linear``.
        checkpoint_activations: recompute each block in the backward pass to save memory.
        chunk_size: encode batches larger than this in chunks of ``chunk_size`` prompts (e.g. all
            identities' prompts at once); ``None`` encodes the batch in one pass.
        causal: keep CLIP's causal mask (default); ``False``: bidirectional attention over
            the tokens up to the end of text.
    """

    def __init__(
        self,
        clip_model: nn.Module,
        checkpoint_activations: bool = False,
        chunk_size: int | None = None,
        causal: bool = True,
    ) -> None:
        super().__init__()
        checks.check_integer("chunk_size", chunk_size, 1, optional=True)
        if not isinstance(causal, bool):
            raise ValueError(f"causal must be a bool, got {causal!r}")
        tower = text_tower(clip_model)
        self.transformer: Any = tower.transformer  # open_clip's Transformer
        self.positional_embedding: Tensor = tower.positional_embedding
        self.ln_final: nn.Module = tower.ln_final
        self.text_projection: Tensor | nn.Linear | None = tower.text_projection
        self.attn_mask: Tensor | None
        self.register_buffer("attn_mask", tower.attn_mask if causal else None, persistent=False)
        self.pool_type = getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax"))
        self.eos_id: int | None = getattr(tower, "text_eos_id", getattr(tower, "eos_id", None))
        if self.pool_type not in POOL_TYPES:
            raise ValueError(
                f"clip_model: text pooling must be one of {POOL_TYPES}, got {self.pool_type!r}"
            )
        if self.pool_type == "eos" and self.eos_id is None:
            raise ValueError("clip_model: a text tower pooled at 'eos' must have an eos_id")
        if not causal and self.pool_type not in ("argmax", "eos"):
            raise ValueError(
                "causal=False needs a text tower pooled at the end-of-text token ('argmax' or "
                f"'eos') to tell the padding, got pooling {self.pool_type!r}"
            )
        self.causal = causal
        self.num_heads: int = tower.transformer.resblocks[0].attn.num_heads
        self.width: int = self.positional_embedding.shape[1]
        self.context_length: int = self.positional_embedding.shape[0]
        self.checkpoint_activations = checkpoint_activations
        self.chunk_size = chunk_size

    def forward(self, embeddings: Tensor, token_ids: Tensor) -> TextFeatures:
        """Encode prompts given as token embeddings.

        Args:
            embeddings: ``(B, L, width)`` token embeddings with ``L <= context_length`` (learned
                context vectors included).
            token_ids: ``(B, L)`` token ids of the same prompts, used only to find the pooled
                (end-of-text) position.

        Returns:
            :class:`TextFeatures` with ``sentence`` ``(B, embed_dim)`` and ``tokens``
            ``(B, L, embed_dim)``.
        """
        if embeddings.dim() != 3 or embeddings.shape[2] != self.width:
            raise ValueError(
                f"embeddings must have shape (B, L, {self.width}), got {tuple(embeddings.shape)}"
            )
        if embeddings.shape[1] > self.context_length:
            raise ValueError(
                f"embeddings must have L <= context length {self.context_length}, "
                f"got L = {embeddings.shape[1]}"
            )
        if token_ids.shape != embeddings.shape[:2] or token_ids.is_floating_point():
            raise ValueError(
                f"token_ids must be integer ids of shape {tuple(embeddings.shape[:2])}, got "
                f"{token_ids.dtype} of shape {tuple(token_ids.shape)}"
            )
        if self.chunk_size is None or embeddings.shape[0] <= self.chunk_size:
            return self._encode(embeddings, token_ids)
        chunks = [
            self._encode(chunk, ids)
            for chunk, ids in zip(
                torch.split(embeddings, self.chunk_size), torch.split(token_ids, self.chunk_size)
            )
        ]
        return TextFeatures(*(torch.cat(parts) for parts in zip(*chunks)))

    def encode_trimmed(self, embeddings: Tensor, token_ids: Tensor) -> TextFeatures:
        """:meth:`forward` on the prompts cut after the last pooled position.

        With CLIP's causal text transformer no output up to the pooled (end-of-text) token
        depends on the padding after it, and in the bidirectional mode the padding is masked,
        so the batch is cut after the last pooled position before encoding (77 -> about 15
        tokens for CLIP's template): the same sentence features, and the same token features up
        to that position, at a fraction of the cost. A causal tower with ``"first"``/``"last"``
        pooling, or a tower without a causal mask in causal mode, is not cut.

        Returns:
            :class:`TextFeatures` with ``tokens`` and ``hidden`` of length ``L' <= L``.
        """
        cut = not self.causal or self.attn_mask is not None
        if cut and self.pool_type in ("argmax", "eos"):
            length = int(self.pooled_positions(token_ids).max()) + 1
            embeddings, token_ids = embeddings[:, :length], token_ids[:, :length]
        features: TextFeatures = self(embeddings, token_ids)
        return features

    def _encode(self, embeddings: Tensor, token_ids: Tensor) -> TextFeatures:
        length = embeddings.shape[1]
        cast_dtype = self.transformer.get_cast_dtype()
        x = embeddings.to(cast_dtype) + self.positional_embedding[:length].to(cast_dtype)
        if self.causal:
            mask = None if self.attn_mask is None else self.attn_mask[:length, :length]
        else:
            mask = self._padding_mask(token_ids, x.dtype)
        x, _ = run_transformer(
            self.transformer, x, mask, checkpoint_activations=self.checkpoint_activations
        )
        x = self.ln_final(x)
        rows = torch.arange(x.shape[0], device=x.device)
        pooled = x[rows, self.pooled_positions(token_ids)]
        return TextFeatures(self._project(pooled), self._project(x), x)

    def _padding_mask(self, token_ids: Tensor, dtype: torch.dtype) -> Tensor:
        """``(B * heads, L, L)`` additive mask: ``-inf`` on the keys after each end of text."""
        padding = ~self.valid_token_mask(token_ids)
        mask = torch.zeros(padding.shape, dtype=dtype, device=token_ids.device)
        mask = mask.masked_fill(padding, float("-inf"))
        length = token_ids.shape[1]
        return mask[:, None, None, :].expand(-1, self.num_heads, length, -1).flatten(0, 1)

    def valid_token_mask(self, token_ids: Tensor) -> Tensor:
        """``(B, L)`` bool: the positions up to and including the pooled (end-of-text) one.

        The start token, the words and the end-of-text token; the padding after it is
        ``False``. With ``"first"``/``"last"`` pooling every position is valid.

        Args:
            token_ids: ``(B, L)`` token ids.
        """
        positions = torch.arange(token_ids.shape[1], device=token_ids.device)
        if self.pool_type in ("first", "last"):
            return torch.ones_like(token_ids, dtype=torch.bool)
        return positions <= self.pooled_positions(token_ids)[:, None]

    def content_token_mask(self, token_ids: Tensor) -> Tensor:
        """``(B, L)`` bool: the word positions, strictly between the start token (position 0)
        and the end-of-text token; the positions a masked language model may mask.

        Args:
            token_ids: ``(B, L)`` token ids of a tower pooled at the end of text.
        """
        if self.pool_type not in ("argmax", "eos"):
            raise ValueError(
                "content_token_mask needs a text tower pooled at the end-of-text token, got "
                f"pooling {self.pool_type!r}"
            )
        positions = torch.arange(token_ids.shape[1], device=token_ids.device)
        return (positions > 0) & (positions < self.pooled_positions(token_ids)[:, None])

    def pooled_positions(self, token_ids: Tensor) -> Tensor:
        """``(B,)`` index of the token each sentence feature is pooled from.

        The end-of-text token (``"argmax"``: the largest token id, as in CLIP; ``"eos"``: the
        first ``eos_id``), the last position (``"last"``) or the first (``"first"``).

        Args:
            token_ids: ``(B, T)`` token ids.
        """
        if self.pool_type == "argmax":
            return token_ids.argmax(dim=-1)
        if self.pool_type == "eos" and self.eos_id is not None:  # __init__ checks eos_id
            return (token_ids == self.eos_id).int().argmax(dim=-1)
        last = token_ids.shape[1] - 1 if self.pool_type == "last" else 0
        return torch.full_like(token_ids[:, 0], last)

    def _project(self, features: Tensor) -> Tensor:
        if self.text_projection is None:
            return features
        if isinstance(self.text_projection, nn.Linear):
            projected: Tensor = self.text_projection(features)
            return projected
        return features @ self.text_projection
