"""Old import paths that keep working for one release, with a warning naming the new one.

A module whose names moved ends with one line::

    __getattr__ = moved_names(__name__, {"re_ranking": "reidkit.retrieval.re_ranking"})

``from old.module import re_ranking`` (or ``old.module.re_ranking``) then returns the object
from its new home and emits, once per old name and process, a :class:`DeprecationWarning`
that names the old and the new path, attributed to the line that asked for the name
(:func:`warnings.warn` skips the import machinery's frames). Names that did not move raise
:class:`AttributeError` as usual. A name whose replacement is not the same object (a function
whose default or signature changed) maps to ``(old_behaviour, "what to use instead")``, the
old behaviour given as an object or as a dotted path.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

_warned: set[str] = set()
"""Old paths (``"module.name"``) that have warned in this process."""


def moved_names(
    module_name: str, moved: Mapping[str, str | tuple[Any, str]]
) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` that resolves the ``moved`` names in their new homes.

    Args:
        module_name: the old module's ``__name__``.
        moved: old name -> new dotted path (``"package.module.name"``), or -> ``(value,
            advice)``: the object to return (or its dotted path) and what the warning tells to
            use instead.

    Returns:
        The function to assign to the old module's ``__getattr__`` (PEP 562).
    """
    targets = dict(moved)

    def __getattr__(name: str) -> Any:
        target = targets.get(name)
        if target is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value, advice = (target, target) if isinstance(target, str) else target
        old_path = f"{module_name}.{name}"
        if old_path not in _warned:
            _warned.add(old_path)
            warnings.warn(
                f"{old_path} is deprecated and will be removed in the next release; use {advice}",
                DeprecationWarning,
                stacklevel=2,
            )
        if isinstance(value, str):
            new_module, _, new_name = value.rpartition(".")
            value = getattr(importlib.import_module(new_module), new_name)
        return value

    return __getattr__
