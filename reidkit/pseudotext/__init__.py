"""Pseudo texts for unlabelled person images: UniPT's divide-conquer-combine (sec. 3.1).

* divide: :class:`AttributeVocabulary` of :class:`Attribute` (phrases, required or optional,
  a prompt template, synonyms); UniPT's 14 names (:data:`UNIPT_ATTRIBUTES`,
  :func:`unipt_vocabulary` with the user's phrases) and the synthetic pedestrians'
  (:func:`synthetic_vocabulary`);
* conquer: :func:`score_prompts` (a frozen CLIP's logits of every image against every prompt)
  and :func:`select_phrases` (required: the best phrase; optional: above a softmax probability,
  per attribute or over all prompts);
* combine: :class:`PseudoTextComposer` (templates with optional blanks, synonyms, a seed);
* :func:`generate_pseudo_texts`: all three for a folder of images, to a JSON file
  (``python -m reidkit.pseudotext``); :func:`read_pseudo_texts` reads it back.
"""

from reidkit.pseudotext.combine import SYNTHETIC_TEMPLATES, CaptionTemplate, PseudoTextComposer
from reidkit.pseudotext.conquer import (
    SOFTMAX_SCOPES,
    prompt_probabilities,
    score_prompts,
    select_phrases,
)
from reidkit.pseudotext.generate import find_images, generate_pseudo_texts, read_pseudo_texts
from reidkit.pseudotext.vocabulary import (
    UNIPT_ATTRIBUTES,
    UNIPT_OPTIONAL_ATTRIBUTES,
    UNIPT_REQUIRED_ATTRIBUTES,
    Attribute,
    AttributeVocabulary,
    PromptOwner,
    synthetic_vocabulary,
    unipt_vocabulary,
)

__all__ = [
    "SOFTMAX_SCOPES",
    "SYNTHETIC_TEMPLATES",
    "UNIPT_ATTRIBUTES",
    "UNIPT_OPTIONAL_ATTRIBUTES",
    "UNIPT_REQUIRED_ATTRIBUTES",
    "Attribute",
    "AttributeVocabulary",
    "CaptionTemplate",
    "PromptOwner",
    "PseudoTextComposer",
    "find_images",
    "generate_pseudo_texts",
    "prompt_probabilities",
    "read_pseudo_texts",
    "score_prompts",
    "select_phrases",
    "synthetic_vocabulary",
    "unipt_vocabulary",
]
