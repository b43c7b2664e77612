"""A momentum (exponential moving average) copy of a module: MoCo's key encoder.

MoCo (He et al., 2020, eq. 2) and VAL-PAT (the key encoders ``E_k^I``, ``E_k^T`` and the
attribute classifier ``W_k, z_k`` of eq. 4) encode keys with a slowly moving copy of the
query encoder, updated after every step as

.. math:: \\theta_k \\leftarrow m\\,\\theta_k + (1 - m)\\,\\theta_q,

and never by gradients. Buffers (batch-norm statistics) are copied from the online module at
every update. The copy starts equal to the online module.
"""

from __future__ import annotations

import copy
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from reidkit import checks

ModuleT = TypeVar("ModuleT", bound=nn.Module)


class MomentumEncoder(nn.Module, Generic[ModuleT]):
    """A frozen copy of ``online`` that follows it with momentum ``m``.

    Args:
        online: the module whose parameters the copy follows (not held: :meth:`update` is
            given it at every step, so that its parameters are not saved twice).
        momentum: ``m`` in ``[0, 1]`` (0.999 in MoCo; 0 copies, 1 freezes).

    Attributes:
        module: the copy, with ``requires_grad=False`` on every parameter; part of the
            ``state_dict``.
    """

    def __init__(self, online: ModuleT, momentum: float = 0.999) -> None:
        super().__init__()
        checks.check_number("momentum", momentum, at_least=0, at_most=1)
        self.momentum = float(momentum)
        self.module: ModuleT = copy.deepcopy(online)
        self.module.requires_grad_(False)

    @torch.no_grad()
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The copy's output, computed without gradient."""
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update(self, online: nn.Module) -> None:
        """``θ_k <- m θ_k + (1 - m) θ_q`` for every parameter; buffers copied from ``online``.

        Raises:
            ValueError: ``online`` does not have the copy's parameters and buffers (names
                and shapes).
        """
        pairs = []
        for kind in ("parameters", "buffers"):
            mine = dict(getattr(self.module, f"named_{kind}")())
            theirs = dict(getattr(online, f"named_{kind}")())
            if mine.keys() != theirs.keys() or any(
                mine[name].shape != theirs[name].shape for name in mine
            ):
                raise ValueError(
                    f"online must have the {kind} of the module the copy was made of "
                    f"(names and shapes); the copy has {sorted(mine)}, got {sorted(theirs)}"
                )
            pairs.append([(mine[name], theirs[name]) for name in mine])
        parameters, buffers = pairs
        for key, query in parameters:
            key.lerp_(query.detach().to(key.dtype), 1.0 - self.momentum)
        for key, query in buffers:
            key.copy_(query)

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}"
