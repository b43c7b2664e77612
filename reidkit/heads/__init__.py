"""Heads: the layers between a backbone's feature and its losses.

* :class:`BNNeck`: bias-free batch normalisation and a bias-free classifier (Bag of Tricks);
  the triplet loss acts before it, the ID loss on its logits.
"""

from reidkit.heads.bnneck import BNNeck, BNNeckOutput

__all__ = ["BNNeck", "BNNeckOutput"]
