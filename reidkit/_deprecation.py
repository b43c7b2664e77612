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

Keyword arguments that gave way to another argument (the Sinkhorn settings that became one
``options=`` object) keep working the same way: :func:`warn_deprecated_arguments` warns once
per function and process, naming what to pass instead.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reidkit._warnings import external_stacklevel

_warned: set[str] = set()
"""Old paths (``"module.name"``; ``"owner()"`` for keywords) that warned in this process."""


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


def warn_deprecated_arguments(owner: str, names: Sequence[str], advice: str) -> None:
    """Warn, once per ``owner`` and process, that its keyword arguments ``names`` are deprecated.

    The :class:`DeprecationWarning` reads ``"the keyword arguments epsilon, max_iter of
    reidkit.PatchToTokenAlignment are deprecated and will be removed in the next release; use
    options=..."`` and is attributed to the first caller outside reidkit.

    Args:
        owner: the function or class that took them, as users name it.
        names: the deprecated keywords that were given.
        advice: what to pass instead.
    """
    key = f"{owner}()"
    if key in _warned:
        return
    _warned.add(key)
    noun = "keyword argument " if len(names) == 1 else "keyword arguments "
    verb = "is" if len(names) == 1 else "are"
    warnings.warn(
        f"the {noun}{', '.join(names)} of {owner} {verb} deprecated and will be removed in the "
        f"next release; use {advice}",
        DeprecationWarning,
        stacklevel=external_stacklevel(),
    )
