"""Heads: the layers between a backbone's feature and its losses.

* :class:`BNNeck`: bias-free batch normalisation and a bias-free classifier (Bag of Tricks);
  the triplet loss acts before it, the ID loss on its logits.
* :class:`TokenMaxPoolEmbedding`: UniPT's embedding head, a per-token projection (its 1x1
  convolution) and the maximum over the valid tokens (sec. 4.1).
* :class:`SharedIdentityClassifier`: one identity classifier for image and text embeddings
  (UniPT eq. 4).
* :class:`MaskedLanguageModelHead`: BERT's prediction head from hidden states to vocabulary
  logits, its decoder optionally tied to the token embeddings (UniPT eq. 2).
"""

from reidkit.heads.bnneck import BNNeck, BNNeckOutput
from reidkit.heads.embedding import TokenMaxPoolEmbedding
from reidkit.heads.identity import CrossModalLogits, SharedIdentityClassifier
from reidkit.heads.mlm import MaskedLanguageModelHead

__all__ = [
    "BNNeck",
    "BNNeckOutput",
    "CrossModalLogits",
    "MaskedLanguageModelHead",
    "SharedIdentityClassifier",
    "TokenMaxPoolEmbedding",
]
