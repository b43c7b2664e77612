"""Deprecated: feature extraction lives in :mod:`reidkit.retrieval`."""

from reidkit._deprecation import moved_names

__getattr__ = moved_names(
    __name__,
    {
        "ExtractedFeatures": "reidkit.retrieval.ExtractedFeatures",
        "extract_features": "reidkit.retrieval.extract_features",
    },
)
