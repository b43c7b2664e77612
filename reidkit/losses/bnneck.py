"""Deprecated: :class:`BNNeck` is a head, in :mod:`reidkit.heads`."""

from reidkit._deprecation import moved_names

__getattr__ = moved_names(
    __name__,
    {"BNNeck": "reidkit.heads.BNNeck", "BNNeckOutput": "reidkit.heads.BNNeckOutput"},
)
