"""YAML that a repository wrote, loaded without letting it crash modelci.

Every YAML file a commit holds (``modelci.yaml``, ``dvc.yaml``, ``params.yaml``,
``.dvc`` pointers, a trained model's ``MLmodel``) is read here, with a safe loader
(libyaml's when PyYAML has it: the pure-Python parser takes seconds on a hostile
megabyte). libyaml's composer recurses in C: some 60,000 ``[`` overflow the stack
and kill the process (a segfault, not an exception); the pure-Python one raises
RecursionError. The event parser recurses in neither, so the nesting depth is
counted on the events first and anything deeper than ``MAX_DEPTH`` is a
``yaml.YAMLError``, which callers already turn into "not valid YAML".
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["MAX_DEPTH", "TooDeep", "load", "loader"]

MAX_DEPTH = 100  # far beyond any configuration a person writes
loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class TooDeep(yaml.YAMLError):
    problem = f"nests deeper than {MAX_DEPTH} levels"

    def __init__(self) -> None:
        super().__init__(self.problem)


def check_depth(text: str | bytes) -> None:
    """Raise TooDeep when ``text`` nests deeper than MAX_DEPTH (a YAMLError if it is not YAML)."""
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise TooDeep()
        elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
            depth -= 1


def load(text: str | bytes) -> Any:
    """The document in ``text``; yaml.YAMLError when it is not YAML or nests too deep."""
    check_depth(text)
    return yaml.load(text, Loader=loader)  # noqa: S506 (a safe loader)
