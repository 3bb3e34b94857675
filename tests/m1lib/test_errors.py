"""The error tree: the drawing in m1lib/errors.py is the whole tree, parent for parent."""

from __future__ import annotations

import importlib
import pkgutil
import re

import m1lib
from m1lib import errors
from m1lib.errors import M1Error

_BRANCH = re.compile(r"^(?P<indent>(?:│   |    )*)(?:├── |└── )(?P<name>\w+)")


def all_m1_errors() -> set[type[M1Error]]:
    """Every subclass of M1Error defined anywhere in m1lib (each module imported first)."""
    for module in pkgutil.walk_packages(m1lib.__path__, "m1lib."):
        if not module.name.endswith("__main__") and ".migrations" not in module.name:
            importlib.import_module(module.name)
    found: set[type[M1Error]] = set()
    pending: list[type[M1Error]] = [M1Error]
    while pending:
        for sub in pending.pop().__subclasses__():
            if sub.__module__.startswith("m1lib.") and sub not in found:
                found.add(sub)
                pending.append(sub)
    return found


def drawn_parents(docstring: str) -> dict[str, str]:
    """Each class drawn under ``M1Error`` -> the class it is drawn under."""
    lines = docstring.splitlines()
    root = lines.index("M1Error")
    parents: dict[str, str] = {}
    chain = ["M1Error"]
    for line in lines[root + 1 :]:
        match = _BRANCH.match(line)
        if match is None:
            break  # the drawing ends at the first line that is no branch
        depth = len(match["indent"]) // 4
        del chain[depth + 1 :]
        parents[match["name"]] = chain[depth]
        chain.append(match["name"])
    return parents


def _m1_parent(cls: type[M1Error]) -> str:
    return next(base.__name__ for base in cls.__bases__ if issubclass(base, M1Error))


def test_the_drawing_holds_every_m1_error_under_its_parent() -> None:
    drawn = drawn_parents(errors.__doc__ or "")
    actual = {cls.__name__: _m1_parent(cls) for cls in all_m1_errors()}
    assert drawn == actual


def test_the_drawing_reader_sees_nesting_and_the_end_of_the_drawing() -> None:
    """The reader itself: a nested branch, a sibling after it, and prose after the drawing."""
    sample = "Title\n\nM1Error\n├── A   text\n│   └── B   text\n└── C\n\nA note naming D.\n"
    assert drawn_parents(sample) == {"A": "M1Error", "B": "A", "C": "M1Error"}
