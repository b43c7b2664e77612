"""VAL-PAT's pre-training model (Bao et al., 2023, sec. 3) on CLIP's two towers.

Query encoders ``E_q^I`` (:class:`VALPATImageEncoder`: a ViT, CLIP's projection to the joint
embedding, and a MoCo v2 projection head for the self-supervised branch) and ``E_q^T``
(:class:`VALPATTextEncoder`: CLIP's causal text transformer, pooled at the end of text and
projected, as VAL-PAT's CLIP-like text encoder), an attribute classifier ``W_q, z_q`` on the
joint embeddings, momentum copies ``E_k^I``, ``E_k^T``, ``W_k, z_k``
(:class:`~reidkit.memory.MomentumEncoder`) and three key queues
(:class:`~reidkit.memory.FeatureQueue`): the self-supervised image keys (eq. 1), and the image
and the text keys of the cross-modal contrast (eq. 2).

One call of :class:`VALPATModel` on a batch of pairs (two strongly augmented views of each
image, one weakly augmented view, the text and the mined attribute labels):

1. moves the momentum copies towards the query encoders (MoCo updates before the keys);
2. computes the queries and, without gradient, the keys;
3. reads the queues (copies: the loss still needs them after step 4);
4. appends this batch's keys to the queues (gathered over the ranks);

and returns the :class:`~reidkit.losses.VALPATBatch` that :class:`~reidkit.losses.VALPATLoss`
takes. ReID and text-to-image retrieval use the query encoders' joint embeddings
(:meth:`VALPATModel.encode_image`, :meth:`VALPATModel.encode_text`); attribute recognition the
classifier on the image embedding (:meth:`VALPATModel.attribute_logits`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from reidkit.clip import CLIPImageEncoder, CLIPTextEncoder, ImageFeatures, text_tower
from reidkit.losses import VALPATBatch
from reidkit.memory import FeatureQueue, MomentumEncoder


class VALPATImageEncoder(nn.Module):
    """A CLIP ViT with its projection (the joint embedding) and a MoCo v2 head (the SSL key).

    Args:
        clip_model: an open_clip CLIP with a class-token ViT; its visual tower is shared.
        ssl_dim: the width of the self-supervised features (MoCo v2: 128).
        ssl_hidden: the hidden width of the head (MoCo v2: the backbone's width).
    """

    def __init__(self, clip_model: nn.Module, ssl_dim: int, ssl_hidden: int) -> None:
        super().__init__()
        self.encoder = CLIPImageEncoder(clip_model)
        width: int = self.encoder.visual.transformer.width
        self.ssl_head = nn.Sequential(
            nn.Linear(width, ssl_hidden), nn.ReLU(inplace=True), nn.Linear(ssl_hidden, ssl_dim)
        )

    def forward(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` images to ``(B, embed_dim)`` joint embeddings."""
        features: ImageFeatures = self.encoder(images)
        return features.embedding

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(embedding (B, embed_dim), ssl (B, ssl_dim))`` of ``images``."""
        features = self.encoder(images)
        return features.embedding, self.ssl_head(features.cls)


class VALPATTextEncoder(nn.Module):
    """CLIP's text tower from token ids: the projected end-of-text feature.

    Args:
        clip_model: an open_clip CLIP with a transformer text tower; shared.
    """

    def __init__(self, clip_model: nn.Module) -> None:
        super().__init__()
        self.token_embedding: nn.Embedding = text_tower(clip_model).token_embedding
        self.encoder = CLIPTextEncoder(clip_model)

    @property
    def context_length(self) -> int:
        """The tower's number of positions."""
        return self.encoder.context_length

    def forward(self, token_ids: Tensor) -> Tensor:
        """``(B, L)`` token ids to ``(B, embed_dim)`` embeddings."""
        embeddings: Tensor = self.token_embedding(token_ids)
        return self.encoder.encode_trimmed(embeddings, token_ids).sentence


class VALPATModel(nn.Module):
    """Query and momentum encoders, attribute classifiers and key queues of VAL-PAT.

    Args:
        clip_model: an open_clip CLIP (both towers; shared with the query encoders).
        num_attributes: ``M``.
        queue_size: ``K`` of every queue (65536 in VAL-PAT).
        momentum: ``m`` of the key encoders and of ``W_k`` (MoCo: 0.999).
        ssl_dim: width of the self-supervised features (128).
        ssl_hidden: hidden width of their head (``None``: the ViT's width).
    """

    def __init__(
        self,
        clip_model: nn.Module,
        num_attributes: int,
        queue_size: int = 65536,
        momentum: float = 0.999,
        ssl_dim: int = 128,
        ssl_hidden: int | None = None,
    ) -> None:
        super().__init__()
        visual: Any = clip_model.visual  # open_clip's VisionTransformer
        width: int = visual.transformer.width
        embed_dim: int = visual.output_dim
        self.image_encoder = VALPATImageEncoder(clip_model, ssl_dim, ssl_hidden or width)
        self.text_encoder = VALPATTextEncoder(clip_model)
        self.attributes = nn.Linear(embed_dim, num_attributes)
        self.image_momentum = MomentumEncoder(self.image_encoder, momentum)
        self.text_momentum = MomentumEncoder(self.text_encoder, momentum)
        self.attribute_momentum = MomentumEncoder(self.attributes, momentum)
        self.ssl_queue = FeatureQueue(queue_size, ssl_dim)
        self.image_queue = FeatureQueue(queue_size, embed_dim)
        self.text_queue = FeatureQueue(queue_size, embed_dim)

    def encode_image(self, images: Tensor) -> Tensor:
        """``(B, embed_dim)`` joint embeddings ``q^I`` of images (ReID and retrieval)."""
        embeddings: Tensor = self.image_encoder(images)
        return embeddings

    def encode_text(self, token_ids: Tensor) -> Tensor:
        """``(B, embed_dim)`` joint embeddings ``q^T`` of token ids."""
        embeddings: Tensor = self.text_encoder(token_ids)
        return embeddings

    def attribute_logits(self, images: Tensor) -> Tensor:
        """``(B, M)`` attribute logits ``W_q q^I + z_q`` of images (attribute recognition)."""
        logits: Tensor = self.attributes(self.image_encoder(images))
        return logits

    def forward(
        self,
        strong_views: tuple[Tensor, Tensor],
        weak_view: Tensor,
        token_ids: Tensor,
        attribute_labels: Tensor,
    ) -> VALPATBatch:
        """One training step's features; updates the momentum copies first and the queues
        last (see the module docstring).

        Args:
            strong_views: two ``(N, 3, H, W)`` strongly augmented views of the images (eq. 1).
            weak_view: ``(N, 3, H, W)`` the weakly augmented view (flip; eq. 2-4).
            token_ids: ``(N, L)`` the paired texts.
            attribute_labels: ``(N, M)`` their mined attribute labels.
        """
        self.image_momentum.update(self.image_encoder)
        self.text_momentum.update(self.text_encoder)
        self.attribute_momentum.update(self.attributes)
        first, second = strong_views
        count = weak_view.shape[0]
        embeddings, ssl = self.image_encoder.encode(torch.cat([first, weak_view]))
        ssl_queries, image_queries = ssl[:count], embeddings[count:]
        text_queries = self.text_encoder(token_ids)
        with torch.no_grad():
            key_embeddings, key_ssl = self.image_momentum.module.encode(
                torch.cat([second, weak_view])
            )
        ssl_keys, image_keys = key_ssl[:count], key_embeddings[count:]
        text_keys = self.text_momentum(token_ids)
        batch = VALPATBatch(
            ssl_queries=ssl_queries,
            ssl_keys=ssl_keys,
            ssl_queue=self.ssl_queue.keys().clone(),
            image_queries=image_queries,
            text_queries=text_queries,
            image_keys=image_keys,
            text_keys=text_keys,
            image_queue=self.image_queue.keys().clone(),
            text_queue=self.text_queue.keys().clone(),
            image_attribute_logits=self.attributes(image_queries),
            text_attribute_logits=self.attributes(text_queries),
            image_key_attribute_logits=self.attribute_momentum(image_keys),
            text_key_attribute_logits=self.attribute_momentum(text_keys),
            attribute_labels=attribute_labels,
        )
        self.ssl_queue.enqueue(ssl_keys)
        self.image_queue.enqueue(image_keys)
        self.text_queue.enqueue(text_keys)
        return batch
