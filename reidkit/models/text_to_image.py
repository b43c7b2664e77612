"""A dual encoder with one identity classifier for both modalities: text-to-image fine-tuning.

UniPT fine-tunes its pre-trained encoders on a text-to-image ReID data set with the
identification loss through a shared classifier (eq. 4) and the ranking loss (eq. 5);
:class:`TextToImageModel` gives both losses their inputs for any pair of encoders that map
images and token ids to embeddings of one dimension (UniPT's, VAL-PAT's). Retrieval ranks
gallery images by the cosine similarity of their embedding to the text's
(:func:`reidkit.eval.evaluate_t2i_model` with :meth:`TextToImageModel.encode_image` and
:meth:`TextToImageModel.encode_text`).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from reidkit.heads import SharedIdentityClassifier


class TextToImageOutput(NamedTuple):
    """What :class:`TextToImageModel` returns for ``N`` pairs: ``image_embeddings`` and
    ``text_embeddings`` ``(N, D)``, ``image_logits`` and ``text_logits`` ``(N, C)``."""

    image_embeddings: Tensor
    text_embeddings: Tensor
    image_logits: Tensor
    text_logits: Tensor


class TextToImageModel(nn.Module):
    """Image and text encoders and a shared identity classifier (UniPT eq. 4-5).

    Args:
        image_encoder: ``(B, 3, H, W)`` images to ``(B, D)`` embeddings.
        text_encoder: ``(B, L)`` token ids to ``(B, D)`` embeddings.
        embed_dim: ``D``.
        num_classes: the training identities.
    """

    def __init__(
        self, image_encoder: nn.Module, text_encoder: nn.Module, embed_dim: int, num_classes: int
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.classifier = SharedIdentityClassifier(embed_dim, num_classes)

    def encode_image(self, images: Tensor) -> Tensor:
        """``(B, D)`` embeddings of ``(B, 3, H, W)`` images."""
        embeddings: Tensor = self.image_encoder(images)
        return embeddings

    def encode_text(self, token_ids: Tensor) -> Tensor:
        """``(B, D)`` embeddings of ``(B, L)`` token ids."""
        embeddings: Tensor = self.text_encoder(token_ids)
        return embeddings

    def forward(self, images: Tensor, token_ids: Tensor) -> TextToImageOutput:
        """Embed and classify ``N`` pairs."""
        image_embeddings = self.image_encoder(images)
        text_embeddings = self.text_encoder(token_ids)
        logits = self.classifier(image_embeddings, text_embeddings)
        return TextToImageOutput(image_embeddings, text_embeddings, logits.image, logits.text)
