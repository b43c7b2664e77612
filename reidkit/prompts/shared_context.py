"""CoOp-style prompts: context vectors shared by every class, followed by a per-class part.

With class names the prompt of class ``c`` is ``"[V_1] ... [V_M] <name of c>."``: only the
``M`` shared vectors are learned. Person identities have no names, so with a class count the
per-class part is ``R`` learnable identity tokens instead:
``"[V_1] ... [V_M] [X_1^c] ... [X_R^c] person."``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from reidkit import checks
from reidkit.prompts.template import (
    PromptBatch,
    PromptTemplate,
    Tokenizer,
    resolve_labels,
)


class SharedContextPromptLearner(nn.Module):
    """Shared learnable context plus class-name tokens or per-class learnable tokens.

    Args:
        clip_model: an open_clip CLIP model (any text width); only its token embedding is read.
        classes: class names (their tokens form the frozen per-class suffix) or the number of
            classes (each then gets ``n_class_ctx`` learnable tokens).
        tokenizer: maps a list of strings to ``(T, L)`` ids; ``None`` uses CLIP's tokenizer.
        n_ctx: number ``M`` of shared context tokens.
        n_class_ctx: number ``R`` of learnable tokens per class, used only when ``classes`` is a
            count.

    Attributes:
        context: ``(M, width)`` shared vectors ``[V_1] ... [V_M]``.
        class_context: ``(C, R, width)`` per-class vectors, or ``None`` with class names.
        context_positions: the slice of sequence positions of all learnable tokens.
    """

    def __init__(
        self,
        clip_model: nn.Module,
        classes: Sequence[str] | int,
        tokenizer: Tokenizer | None = None,
        n_ctx: int = 4,
        n_class_ctx: int = 4,
    ) -> None:
        super().__init__()
        checks.check_integer("n_ctx", n_ctx, 1)
        if isinstance(classes, int):
            checks.check_integer("classes", classes, 1)
            checks.check_integer("n_class_ctx", n_class_ctx, 1)
            self.num_classes = classes
            slots = n_ctx + n_class_ctx
            self.template = PromptTemplate(["{} person."], slots, clip_model, tokenizer)
            class_shape = (classes, n_class_ctx, self.template.width)
        else:
            if isinstance(classes, str) or not classes:
                raise ValueError(f"classes must be class names or a count >= 1, got {classes!r}")
            self.num_classes = len(classes)
            texts = ["{} " + name + "." for name in classes]
            self.template = PromptTemplate(texts, n_ctx, clip_model, tokenizer)
            class_shape = None
        dtype = self.template.prefix.dtype
        self.context = nn.Parameter(torch.empty(n_ctx, self.template.width, dtype=dtype))
        nn.init.normal_(self.context, std=0.02)
        self.class_context = None
        if class_shape is not None:
            self.class_context = nn.Parameter(torch.empty(class_shape, dtype=dtype))
            nn.init.normal_(self.class_context, std=0.02)

    @property
    def context_positions(self) -> slice:
        """Sequence positions of the learnable tokens (shared, then per-class)."""
        return self.template.context_positions

    def forward(self, labels: Tensor | None = None) -> PromptBatch:
        """Prompts of the classes ``labels``.

        Args:
            labels: ``(B,)`` class indices in ``[0, C)``; ``None`` gives all ``C`` prompts.

        Returns:
            :class:`~reidkit.prompts.template.PromptBatch` with ``(B, L, width)`` embeddings.
        """
        labels = resolve_labels(labels, self.num_classes, self.context.device)
        shared = self.context.expand(labels.shape[0], -1, -1)
        if self.class_context is None:
            return self.template.assemble(shared, rows=labels)
        return self.template.assemble(torch.cat([shared, self.class_context[labels]], dim=1))
