"""Memory bank of class centroids for prototypical contrastive learning (PCL-CLIP sec. 4.1).

The memory :math:`\\mathcal{K} \\in \\mathbb{R}^{C \\times d}` holds one L2-normalised centroid
per class (supervised) or per cluster (unsupervised). Each centroid starts as the normalised
mean of its class's L2-normalised features and then follows the features seen in training with
momentum :math:`\\mu` (eq. 5), renormalised after every step:

.. math::

    \\mathcal{K}[y_i] \\leftarrow
        \\frac{\\mu \\mathcal{K}[y_i] + (1 - \\mu) \\mathbf{f}_i}
             {\\lVert \\mu \\mathcal{K}[y_i] + (1 - \\mu) \\mathbf{f}_i \\rVert_2}.

The memory is a buffer, never a parameter: updates run under :func:`torch.no_grad` and no
gradient reaches it. Under ``torch.distributed`` the features and labels of every rank are
gathered before an update, so all ranks hold the same memory.

A feature row holding NaN or inf would turn its centroid into NaN for good: :meth:`update`
skips such rows (the same rows on every rank, after the gather) and counts them in
``num_nonfinite_skipped``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidkit import checks
from reidkit.distributed import all_gather, broadcast_object, get_world_size, raise_on_every_rank
from reidkit.retrieval import extract_features

UPDATE_RULES = ("all", "hardest")


class PrototypeMemory(nn.Module):
    """One L2-normalised centroid per class, updated with momentum (PCL-CLIP eq. 5).

    Args:
        num_classes: ``C``, number of centroids (classes or clusters), >= 1.
        dim: ``d``, feature width, >= 1.
        momentum: ``μ`` in ``[0, 1]``: the weight kept by the old centroid (0.2 in the
            reference code; 1 freezes the memory).
        update_rule: ``"all"``: every sample of the batch updates its class's centroid, one
            after another in batch order (eq. 5); ``"hardest"``: per class present in the batch,
            only the sample least similar to the centroid does (the variant of the reference
            code).
        gather_distributed: under ``torch.distributed``, update with the batches of all ranks
            and initialise every rank with rank 0's centroids, so all ranks hold the same
            memory; ``False`` keeps a separate memory per rank. The arguments are checked on
            every rank before the collectives: bad input on one rank raises the same error on
            all of them (:func:`reidkit.distributed.raise_on_every_rank`).

    Attributes:
        centroids: ``(C, d)`` buffer of unit rows, saved in the ``state_dict``.
        num_nonfinite_skipped: feature rows holding NaN or inf that :meth:`update` left out
            since the memory was built (counted over all ranks when gathering; not saved in
            the ``state_dict``; set it to 0 to count per epoch).
    """

    centroids: Tensor

    def __init__(
        self,
        num_classes: int,
        dim: int,
        momentum: float = 0.2,
        update_rule: str = "all",
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        checks.check_integer("num_classes", num_classes, 1)
        checks.check_integer("dim", dim, 1)
        checks.check_number("momentum", momentum, at_least=0, at_most=1)
        checks.check_choice("update_rule", update_rule, UPDATE_RULES)
        self.momentum = float(momentum)
        self.update_rule = update_rule
        self.gather_distributed = gather_distributed
        self.num_nonfinite_skipped = 0
        self.register_buffer("centroids", torch.zeros(num_classes, dim))

    @property
    def num_classes(self) -> int:
        """``C``, number of centroids."""
        return self.centroids.shape[0]

    @property
    def dim(self) -> int:
        """``d``, feature width."""
        return self.centroids.shape[1]

    @classmethod
    def from_features(
        cls,
        features: Tensor,
        labels: Tensor,
        num_classes: int | None = None,
        momentum: float = 0.2,
        update_rule: str = "all",
        gather_distributed: bool = True,
    ) -> PrototypeMemory:
        """A memory initialised from ``features`` ``(N, d)`` and ``labels`` ``(N,)``.

        See :meth:`initialise_from_features` and the class for the arguments; the memory lives
        on ``features``' device.
        """
        with raise_on_every_rank(enabled=gather_distributed):
            if not isinstance(features, Tensor) or features.dim() != 2:
                raise ValueError(
                    f"features must be a (N, d) tensor, got {checks.describe(features)}"
                )
            classes = _count_classes(labels) if num_classes is None else num_classes
            memory = cls(classes, features.shape[1], momentum, update_rule, gather_distributed)
        return memory.to(features.device).initialise_from_features(features, labels, classes)

    @classmethod
    def from_loader(
        cls,
        model: nn.Module | Callable[[Tensor], Tensor],
        loader: Iterable[Sequence[Any]],
        num_classes: int | None = None,
        momentum: float = 0.2,
        update_rule: str = "all",
        gather_distributed: bool = True,
        device: torch.device | str | None = None,
        flip: bool = False,
    ) -> PrototypeMemory:
        """A memory initialised from the features of a whole loader.

        The features come from :func:`reidkit.retrieval.extract_features` (inference mode, a
        progress bar); the labels are the loader's pids.

        Args:
            model: maps ``(B, 3, H, W)`` images to ``(B, d)`` features.
            loader: yields ``(images, pids, camids[, paths])`` batches, e.g. a test loader over
                the train split; a pid < 0 marks a sample without a class.
            num_classes: ``C``; by default the largest pid + 1.
            momentum, update_rule, gather_distributed: see the class.
            device: where ``model`` runs and the memory lives (default: the model's device
                for the features, the CPU for the memory).
            flip: average each feature with that of the mirrored image.
        """
        extracted = extract_features(model, loader, flip=flip, device=device, desc="centroids")
        memory = cls.from_features(
            extracted.features,
            extracted.pids,
            num_classes,
            momentum,
            update_rule,
            gather_distributed,
        )
        return memory if device is None else memory.to(device)

    @torch.no_grad()
    def initialise_from_features(
        self, features: Tensor, labels: Tensor, num_classes: int | None = None
    ) -> PrototypeMemory:
        """Set every centroid to the normalised mean of its class's normalised features.

        ``K[c] = normalise(mean_{i: y_i = c} normalise(f_i))``. The memory is resized to
        ``num_classes`` rows (default: the largest label + 1), so the same memory can be
        re-initialised from each epoch's clusters. Samples with a label < 0 are ignored. Under
        ``torch.distributed`` (and ``gather_distributed``) every rank receives rank 0's
        centroids.

        Args:
            features: ``(N, d)`` finite features of the whole train set.
            labels: ``(N,)`` integer labels in ``[-1, C)``; every class needs a sample.

        Returns:
            ``self``.

        Raises:
            ValueError: on a bad argument, a row of ``features`` holding NaN or inf (the
                encoder has diverged), or a class without a sample; under
                ``torch.distributed``, on every rank when it holds on one.
        """
        with raise_on_every_rank(enabled=self.gather_distributed):
            _check_batch(features, labels, self.dim)
            classes = _count_classes(labels) if num_classes is None else num_classes
            checks.check_integer("num_classes", classes, 1)
            labels = labels.to(features.device)
            if bool((labels >= classes).any()):
                raise ValueError(f"labels must lie in [-1, {classes}), got values >= {classes}")
            nonfinite = torch.nonzero(~torch.isfinite(features).all(dim=1)).flatten().tolist()
            if nonfinite:
                raise ValueError(
                    f"features must be finite; rows holding NaN or inf: {_first(nonfinite)}"
                )
            kept = labels >= 0
            counts = torch.bincount(labels[kept], minlength=classes)
            if bool((counts == 0).any()):
                empty = torch.nonzero(counts == 0).flatten().tolist()
                raise ValueError(
                    f"labels must give every class in [0, {classes}) a sample; classes without "
                    f"one: {_first(empty)}"
                )
        normalised = F.normalize(features[kept].to(torch.float64), dim=1)
        sums = normalised.new_zeros(classes, self.dim).index_add_(0, labels[kept], normalised)
        centroids = F.normalize(sums, dim=1).to(self.centroids.dtype)
        if self.gather_distributed and get_world_size() > 1:
            centroids = broadcast_object(centroids.cpu()).to(features.device)
        self.centroids = centroids.to(self.centroids.device)
        return self

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor) -> None:
        """Move the centroids of the batch's classes towards its features (eq. 5).

        Call after computing the loss of the batch (the loss uses the memory before the
        update). Features are L2-normalised first and may require grad: the update detaches
        them. Under ``torch.distributed`` (and ``gather_distributed``) the batches of all ranks
        are gathered (rank 0's rows first) and every rank applies the same update.

        Rows of ``features`` holding NaN or inf are skipped (their centroids keep their value
        instead of becoming NaN for the rest of training), counted in
        :attr:`num_nonfinite_skipped` and reported by a :class:`RuntimeWarning`. When
        gathering, the rows are filtered after the gather, so every rank skips the same rows
        and keeps the same memory.

        Args:
            features: ``(B, d)`` features of this rank's batch.
            labels: ``(B,)`` integer labels in ``[0, C)``.

        Raises:
            ValueError: on a bad argument; under ``torch.distributed``, on every rank when it
                holds on one.
        """
        with raise_on_every_rank(enabled=self.gather_distributed):
            _check_batch(features, labels, self.dim)
            if bool(((labels < 0) | (labels >= self.num_classes)).any()):
                raise ValueError(f"labels must lie in [0, {self.num_classes}), got values outside")
        features = features.detach()
        if self.gather_distributed:
            features, labels = all_gather(features), all_gather(labels)
        device = self.centroids.device
        features, labels = features.to(device, self.centroids.dtype), labels.to(device)
        finite = torch.isfinite(features).all(dim=1)
        skipped = int(finite.numel() - finite.sum())
        if skipped:
            self.num_nonfinite_skipped += skipped
            warnings.warn(
                "PrototypeMemory.update skipped feature rows holding NaN or inf; their centroids "
                "keep their value (see num_nonfinite_skipped)",
                RuntimeWarning,
                stacklevel=2,
            )
            features, labels = features[finite], labels[finite]
        features = F.normalize(features, dim=1)
        if self.update_rule == "hardest":
            features, labels = self._hardest_per_class(features, labels)
        mu = self.momentum
        for step_features, step_labels in _steps_without_repeated_labels(features, labels):
            blended = mu * self.centroids[step_labels] + (1.0 - mu) * step_features
            self.centroids[step_labels] = F.normalize(blended, dim=1)

    def _hardest_per_class(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Per class in the batch, its first sample of least cosine similarity to the centroid."""
        similarity = (features * self.centroids[labels]).sum(dim=1)
        by_similarity = torch.sort(similarity, stable=True).indices
        order = by_similarity[torch.sort(labels[by_similarity], stable=True).indices]
        sorted_labels = labels[order]
        first = torch.ones_like(sorted_labels, dtype=torch.bool)
        first[1:] = sorted_labels[1:] != sorted_labels[:-1]
        chosen = order[first]
        return features[chosen], labels[chosen]

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # The number of clusters changes between epochs: take the saved number of rows.
        saved = state_dict.get(prefix + "centroids")
        if isinstance(saved, Tensor) and saved.dim() == 2 and saved.shape[1] == self.dim:
            self.centroids = self.centroids.new_zeros(saved.shape)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, dim={self.dim}, momentum={self.momentum}, "
            f"update_rule={self.update_rule!r}, gather_distributed={self.gather_distributed}"
        )


def _steps_without_repeated_labels(
    features: Tensor, labels: Tensor
) -> Iterable[tuple[Tensor, Tensor]]:
    """Split a batch into steps, in batch order, where each label occurs at most once.

    Step ``k`` holds the ``k``-th occurrence of every label, so applying the steps one after
    another equals the sample-by-sample loop of eq. 5, with ``max count`` vectorised steps.
    """
    order = torch.sort(labels, stable=True).indices
    sorted_labels = labels[order]
    positions = torch.arange(labels.numel(), device=labels.device)
    starts = torch.ones_like(sorted_labels, dtype=torch.bool)
    starts[1:] = sorted_labels[1:] != sorted_labels[:-1]
    group_start = torch.cummax(torch.where(starts, positions, 0), dim=0).values
    occurrence = torch.empty_like(positions)
    occurrence[order] = positions - group_start
    for step in range(int(occurrence.max()) + 1 if labels.numel() else 0):
        rows = occurrence == step
        yield features[rows], labels[rows]


def _check_batch(features: Tensor, labels: Tensor, dim: int) -> None:
    if (
        not isinstance(features, Tensor)
        or features.dim() != 2
        or features.shape[1] != dim
        or not features.is_floating_point()
    ):
        raise ValueError(
            f"features must be a floating (N, {dim}) tensor, got {checks.describe(features)}"
        )
    checks.check_labels("labels", labels, features.shape[0])


def _count_classes(labels: Tensor) -> int:
    if not isinstance(labels, Tensor) or labels.numel() == 0 or int(labels.max()) < 0:
        raise ValueError("labels must hold at least one label >= 0 to infer num_classes")
    return int(labels.max()) + 1


def _first(indices: list[int]) -> str:
    """The first five ``indices``, and an ellipsis when there are more."""
    return f"{indices[:5]}{' ...' if len(indices) > 5 else ''}"
