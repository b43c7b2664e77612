"""Warnings attributed to the user's line rather than to reidkit's.

A warning raised deep inside reidkit (or inside torch's ``Module.__call__`` or autograd) names
the first frame outside reidkit and torch, so that Python's warning filters show it once per
call site of the user's code and can select it by module or line.
"""

from __future__ import annotations

import os
import sys
from types import FrameType

import torch

# Frames in these folders are skipped when a warning is attributed to its call site.
_INTERNAL_PREFIXES = (
    os.path.dirname(__file__) + os.sep,  # reidkit/
    os.path.dirname(torch.__file__) + os.sep,  # torch/ (Module.__call__, Function.apply)
)


def external_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside reidkit and torch, for ``warnings.warn``.

    Call it in the argument list of the ``warnings.warn`` call itself.
    """
    frame: FrameType | None = sys._getframe(1)
    level = 1  # the function that calls warnings.warn
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL_PREFIXES):
        frame, level = frame.f_back, level + 1
    return level
