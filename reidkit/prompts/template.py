"""Tokenized prompt templates with a run of learnable slots, shared by every prompt learner.

A template such as ``"A photo of a {} person."`` is tokenized with ``n`` placeholder words in
place of ``{}``. The token embeddings before and after the placeholders are frozen buffers; the
learners fill the ``n`` slots with learned vectors:
``P = [SOT, "a", "photo", "of", "a", X_1, ..., X_n, "person", ".", EOT, pad...]``.
The slots are found by tokenizing the text twice with two different placeholder words and
comparing, so any tokenizer works as long as the placeholder word is a single token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import open_clip
import torch
from torch import Tensor, nn

from reidkit import checks
from reidkit._deprecation import moved_names
from reidkit.clip.text_encoder import text_tower

Tokenizer = Callable[[list[str]], Tensor]
_PLACEHOLDER_WORDS = ("X", "Y")


class PromptBatch(NamedTuple):
    """Prompts ready for :class:`~reidkit.clip.CLIPTextEncoder`.

    Attributes:
        embeddings: ``(B, L, width)`` token embeddings with the learned vectors in place.
        token_ids: ``(B, L)`` token ids (placeholder ids in the learnable slots).
        context_positions: the slice of sequence positions holding the learnable tokens, so
            ``TextFeatures.tokens[:, context_positions]`` is ``(B, n, embed_dim)``.
    """

    embeddings: Tensor
    token_ids: Tensor
    context_positions: slice


def default_tokenizer(clip_model: nn.Module) -> Tokenizer:
    """CLIP's BPE tokenizer with the context length of ``clip_model``'s text tower."""
    tokenizer: Tokenizer = open_clip.SimpleTokenizer(
        context_length=text_tower(clip_model).context_length
    )
    return tokenizer


def resolve_labels(labels: Tensor | None, num_classes: int, device: torch.device) -> Tensor:
    """Check ``labels`` (``(B,)`` integers in ``[0, num_classes)``); ``None`` means all classes."""
    if labels is None:
        return torch.arange(num_classes, device=device)
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be a 1-D integer tensor (B,), got {labels.dtype} of shape "
            f"{tuple(labels.shape)}"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    return labels.to(device)


class PromptTemplate(nn.Module):
    """Frozen token embeddings of ``T`` texts around ``num_slots`` learnable positions.

    Every text holds ``{}`` once; all texts must place it at the same token position (they may
    differ after it, e.g. in class names). ``token_ids``, ``prefix`` and ``suffix`` are buffers:
    they follow ``.to()`` and are saved in the state dict.

    Args:
        texts: ``T`` strings, each with one ``{}`` where the learnable tokens go.
        num_slots: ``n``, the number of learnable tokens.
        clip_model: an open_clip CLIP model; its token embedding gives the frozen embeddings.
        tokenizer: maps a list of strings to ``(T, L)`` ids; ``None`` uses CLIP's tokenizer.

    Attributes:
        token_ids: ``(T, L)``.
        prefix: ``(T, s, width)`` embeddings before the slots (start of text included).
        suffix: ``(T, L - s - n, width)`` embeddings after them (end of text and padding).
        context_positions: ``slice(s, s + n)``.
    """

    def __init__(
        self,
        texts: Sequence[str],
        num_slots: int,
        clip_model: nn.Module,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        super().__init__()
        checks.check_integer("num_slots", num_slots, 1)
        if isinstance(texts, str) or not texts:
            raise ValueError(f"texts must be a non-empty sequence of strings, got {texts!r}")
        for text in texts:
            if text.count("{}") != 1:
                raise ValueError(f"template must contain '{{}}' exactly once, got {text!r}")
        tower = text_tower(clip_model)
        tokenizer = tokenizer or default_tokenizer(clip_model)
        token_ids, other_ids = (
            tokenizer([text.replace("{}", " ".join([word] * num_slots)) for text in texts])
            for word in _PLACEHOLDER_WORDS
        )
        start = self._slot_start(token_ids, other_ids, num_slots)
        if token_ids.shape[1] > tower.positional_embedding.shape[0]:
            raise ValueError(
                f"tokenizer must produce at most {tower.positional_embedding.shape[0]} tokens for "
                f"this model, got {token_ids.shape[1]}"
            )
        weight = tower.token_embedding.weight
        with torch.no_grad():
            embeddings = tower.token_embedding(token_ids.to(weight.device)).detach()
        self.token_ids: Tensor
        self.prefix: Tensor
        self.suffix: Tensor
        self.register_buffer("token_ids", token_ids.to(weight.device))
        self.register_buffer("prefix", embeddings[:, :start].clone())
        self.register_buffer("suffix", embeddings[:, start + num_slots :].clone())
        self.context_positions = slice(start, start + num_slots)

    @staticmethod
    def _slot_start(token_ids: Tensor, other_ids: Tensor, num_slots: int) -> int:
        """The first slot position; the slots are where the two placeholder words differ."""
        starts: set[int] = set()
        for row, other in zip(token_ids, other_ids):
            positions = (row != other).nonzero().flatten().tolist()
            expected = list(range(positions[0], positions[0] + num_slots)) if positions else []
            if positions != expected or not positions:
                raise ValueError(
                    f"template: the {num_slots} placeholder tokens must fit in the context and "
                    f"tokenize to one token each; found them at positions {positions}"
                )
            starts.add(positions[0])
        if len(starts) != 1:
            raise ValueError(
                f"texts must place '{{}}' at one token position, got positions {sorted(starts)}"
            )
        return starts.pop()

    @property
    def width(self) -> int:
        """Token embedding width."""
        return self.prefix.shape[-1]

    def assemble(self, context: Tensor, rows: Tensor | None = None) -> PromptBatch:
        """Insert ``context`` into the slots of the texts selected by ``rows``.

        Args:
            context: ``(B, n, width)`` learnable token vectors.
            rows: ``(B,)`` indices into the ``T`` texts; ``None`` uses text 0 for every prompt.

        Returns:
            :class:`PromptBatch` with ``(B, L, width)`` embeddings and ``(B, L)`` ids.
        """
        if rows is None:
            rows = torch.zeros(context.shape[0], dtype=torch.long, device=context.device)
        embeddings = torch.cat([self.prefix[rows], context, self.suffix[rows]], dim=1)
        return PromptBatch(embeddings, self.token_ids[rows], self.context_positions)


__getattr__ = moved_names(
    __name__,
    {
        "check_count": (
            partial(checks.check_integer, minimum=1),
            "reidkit.checks.check_integer(name, value, 1)",
        )
    },
)
