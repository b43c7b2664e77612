"""open_clip backbones for person ReID: loading, re-gridding, and text and image encoders.

This subpackage imports open_clip; :mod:`reidkit` itself resolves these names lazily.
"""

from reidkit.clip.image_encoder import CLIPImageEncoder, ImageFeatures, class_token_attention
from reidkit.clip.loading import clip_tokenizer, load_clip
from reidkit.clip.masking import TokenMasking
from reidkit.clip.resize import interpolate_positional_embedding, resize_visual_grid
from reidkit.clip.text_encoder import CLIPTextEncoder, TextFeatures, text_tower

__all__ = [
    "CLIPImageEncoder",
    "CLIPTextEncoder",
    "ImageFeatures",
    "TextFeatures",
    "TokenMasking",
    "class_token_attention",
    "clip_tokenizer",
    "interpolate_positional_embedding",
    "load_clip",
    "resize_visual_grid",
    "text_tower",
]
