"""splitmq.errors documents the whole exception tree: every SplitMQError subclass, under
its own parent."""

from __future__ import annotations

import importlib
import pkgutil
import re

import splitmq
from splitmq import errors
from splitmq.errors import SplitMQError

SKIPPED = ("__main__", "paho_transport")  # an entry point; needs the paho extra


def every_error_class() -> set[type[SplitMQError]]:
    """Every SplitMQError subclass of the modules this environment can import (CI installs
    every extra, so there that is all of them)."""
    for module in pkgutil.walk_packages(splitmq.__path__, "splitmq."):
        if module.name.endswith(SKIPPED):
            continue
        try:
            importlib.import_module(module.name)
        except ModuleNotFoundError as error:  # an extra not installed (aiohttp for web...)
            if (error.name or "splitmq").split(".")[0] == "splitmq":
                raise
    found: set[type[SplitMQError]] = set()
    pending = [SplitMQError]
    while pending:
        cls = pending.pop()
        found.add(cls)
        pending.extend(cls.__subclasses__())
    return {cls for cls in found if cls.__module__.startswith("splitmq.")}


def documented_parents() -> dict[str, str]:
    """``{class: parent}`` read from the tree drawn in the module docstring."""
    assert errors.__doc__ is not None
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in errors.__doc__.splitlines():
        match = re.match(r"^( *)((?:[│ ] {3})*)(?:[├└]── )?([A-Z]\w+)(?: |$)", line)
        if match is None or ("──" not in line and match.group(3) != "SplitMQError"):
            continue
        depth = len(match.group(2)) // 4 + (1 if "──" in line else 0)
        name = match.group(3)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
    return parents


def test_every_error_is_in_the_tree_under_its_parent() -> None:
    parents = documented_parents()
    for cls in every_error_class() - {SplitMQError}:
        assert cls.__name__ in parents, f"{cls.__module__}.{cls.__name__} is not in the tree"
        assert parents[cls.__name__] == cls.__bases__[0].__name__, cls.__name__


def test_the_tree_names_no_class_that_does_not_exist() -> None:
    names = {cls.__name__ for cls in every_error_class()}
    assert set(documented_parents()) <= names
