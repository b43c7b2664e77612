"""UniPT's dual encoder (Shao et al., ICCV 2023, sec. 4.1) on CLIP's two towers.

"We attach a 1x1 convolution layer to the visual and textual encoder respectively to project
the image and text features into the same dimension. Subsequently, we conduct a max-pooling
operation on both the visual and textual features to obtain the global embeddings of V and T."
The paper's towers are a DeiT or ViT and BERT; here they are the towers of an open_clip CLIP:

* :class:`UniPTImageEncoder`: the ViT's class and patch tokens after ``ln_post`` (before CLIP's
  projection), projected and max-pooled, ``V`` ``(B, D)``;
* :class:`UniPTTextEncoder`: the text transformer's hidden states before CLIP's projection,
  bidirectional by default (BERT is, and masked language modelling needs it), projected and
  max-pooled over the tokens up to the end of text, ``T`` ``(B, D)``;
* :class:`UniPTPretrainingModel`: both, with BERT's masking and an MLM head tied to the token
  embeddings: the inputs of ``L_pre = L_con + β L_mlm`` (eq. 1-3).

Fine-tuning (eq. 4-7) uses the same two encoders in a
:class:`~reidkit.models.TextToImageModel`. CLIP's own projections (``visual.proj``,
``text_projection``) are not used and are frozen, so that no trainable parameter is left
without a gradient (``DistributedDataParallel`` requires it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from reidkit import checks
from reidkit.clip import CLIPImageEncoder, CLIPTextEncoder, ImageFeatures, text_tower
from reidkit.clip.masking import TokenMasking
from reidkit.heads import MaskedLanguageModelHead, TokenMaxPoolEmbedding


class UniPTImageEncoder(nn.Module):
    """Images to UniPT's visual embedding ``V``: all tokens projected, then max-pooled.

    Args:
        clip_model: an open_clip CLIP with a class-token ViT; its visual tower is shared.
        embed_dim: ``D``, the joint dimension.
    """

    def __init__(self, clip_model: nn.Module, embed_dim: int) -> None:
        super().__init__()
        self.encoder = CLIPImageEncoder(clip_model)
        visual = self.encoder.visual  # clip_model's tower
        if isinstance(visual.proj, nn.Parameter):
            visual.proj.requires_grad_(False)
        self.head = TokenMaxPoolEmbedding(visual.transformer.width, embed_dim)

    def forward(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` images to ``(B, D)`` embeddings."""
        features: ImageFeatures = self.encoder(images)
        tokens = torch.cat([features.cls[:, None], features.patches.flatten(1, 2)], dim=1)
        embeddings: Tensor = self.head(tokens)
        return embeddings


class UniPTTextEncoder(nn.Module):
    """Token ids to UniPT's textual embedding ``T``: hidden states projected, then max-pooled.

    Args:
        clip_model: an open_clip CLIP with a transformer text tower; shared.
        embed_dim: ``D``, the joint dimension.
        causal: keep CLIP's causal mask; ``False`` (default): bidirectional, as BERT.

    Attributes:
        token_embedding: the tower's token lookup (shared with the MLM head when tied).
        encoder: the :class:`~reidkit.clip.CLIPTextEncoder`.
    """

    def __init__(self, clip_model: nn.Module, embed_dim: int, causal: bool = False) -> None:
        super().__init__()
        tower = text_tower(clip_model)
        self.token_embedding: nn.Embedding = tower.token_embedding
        self.encoder = CLIPTextEncoder(clip_model, causal=causal)
        projection = self.encoder.text_projection
        if projection is not None:
            projection.requires_grad_(False)
        self.head = TokenMaxPoolEmbedding(self.encoder.width, embed_dim)

    @property
    def context_length(self) -> int:
        """The tower's number of positions (77 for CLIP)."""
        return self.encoder.context_length

    def hidden_states(self, embeddings: Tensor, token_ids: Tensor) -> tuple[Tensor, Tensor]:
        """``(hidden (B, L', width), token_ids (B, L'))`` of the batch cut after its last end
        of text (:meth:`~reidkit.clip.CLIPTextEncoder.encode_trimmed`)."""
        hidden = self.encoder.encode_trimmed(embeddings, token_ids).hidden
        return hidden, token_ids[:, : hidden.shape[1]]

    def forward(self, token_ids: Tensor) -> Tensor:
        """``(B, L)`` token ids to ``(B, D)`` embeddings."""
        hidden, token_ids = self.hidden_states(self.token_embedding(token_ids), token_ids)
        embeddings: Tensor = self.head(hidden, self.encoder.valid_token_mask(token_ids))
        return embeddings


class UniPTPretrainingOutput(NamedTuple):
    """What :class:`UniPTPretrainingModel` returns for ``N`` image-text pairs.

    Attributes:
        image_embeddings: ``(N, D)`` ``V``.
        text_embeddings: ``(N, D)`` ``T`` of the unmasked texts.
        mlm_logits: ``(S, vocab)`` predictions at the ``S`` selected positions of the masked
            texts (``None`` without MLM).
        mlm_targets: ``(S,)`` the tokens that were there (``None`` without MLM).
    """

    image_embeddings: Tensor
    text_embeddings: Tensor
    mlm_logits: Tensor | None
    mlm_targets: Tensor | None


class UniPTPretrainingModel(nn.Module):
    """UniPT's pre-training model: both encoders, BERT's masking and an MLM head.

    Args:
        image_encoder: :class:`UniPTImageEncoder`.
        text_encoder: :class:`UniPTTextEncoder` (bidirectional for a meaningful MLM).
        special_ids: token ids never drawn as random replacements (the tokenizer's start and
            end of text).
        mlm: mask the texts and predict them (``β > 0`` in eq. 3); ``False`` builds no
            masking and no MLM head.
        mask_probability: BERT's 15 %.
        tie_mlm_head: decode with the token embedding table (BERT).
    """

    def __init__(
        self,
        image_encoder: UniPTImageEncoder,
        text_encoder: UniPTTextEncoder,
        special_ids: Sequence[int],
        mlm: bool = True,
        mask_probability: float = 0.15,
        tie_mlm_head: bool = True,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.masking: TokenMasking | None = None
        self.mlm_head: MaskedLanguageModelHead | None = None
        if mlm:
            width = text_encoder.encoder.width
            vocab_size = text_encoder.token_embedding.num_embeddings
            self.masking = TokenMasking(
                width, vocab_size, probability=mask_probability, excluded_ids=tuple(special_ids)
            )
            self.mlm_head = MaskedLanguageModelHead(
                width, vocab_size, text_encoder.token_embedding if tie_mlm_head else None
            )

    def forward(self, images: Tensor, token_ids: Tensor) -> UniPTPretrainingOutput:
        """Embed ``N`` pairs: ``images`` ``(N, 3, H, W)`` and their texts ``token_ids``
        ``(N, L)``; with MLM, mask the texts (torch's global generator) and predict."""
        if token_ids.dim() != 2 or token_ids.shape[0] != images.shape[0]:
            raise ValueError(
                f"token_ids must have shape ({images.shape[0]}, L), got "
                f"{checks.describe(token_ids)}"
            )
        image_embeddings = self.image_encoder(images)
        text_embeddings = self.text_encoder(token_ids)
        if self.masking is None or self.mlm_head is None:
            return UniPTPretrainingOutput(image_embeddings, text_embeddings, None, None)
        encoder = self.text_encoder.encoder
        masked = self.masking(
            token_ids, encoder.content_token_mask(token_ids), self.text_encoder.token_embedding
        )
        hidden, trimmed = self.text_encoder.hidden_states(masked.embeddings, token_ids)
        selected = masked.selected[:, : trimmed.shape[1]]
        logits = self.mlm_head(hidden[selected])
        targets = masked.targets[:, : trimmed.shape[1]][selected]
        return UniPTPretrainingOutput(image_embeddings, text_embeddings, logits, targets)
