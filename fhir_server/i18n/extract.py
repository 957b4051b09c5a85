"""A Babel extractor for page texts that Python modules outside the web layer define in plain English: the
(title, text) pairs of refusal pages and the form's own messages.  Those modules stay free of gettext (they are
not about pages); the web layer translates their text when it renders it, looking the English up as the msgid.

``babel.cfg`` names, per file, what to take (both are space-separated lists):

- ``calls``: every string literal passed to these callables (``LaunchRefused("Title", "Text", 400)``);
- ``constants``: every string in these module-level constants (a string, a tuple, or a dict's values).

So a text changed in its module changes ``app.pot`` at the next ``make messages``, and tests/i18n sees a catalogue
that lags behind.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from typing import IO, Any

Extracted = tuple[int, str | None, str, list[str]]


def _strings(node: ast.AST) -> Iterator[ast.Constant]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node
    elif isinstance(node, ast.Tuple | ast.List):
        for element in node.elts:
            yield from _strings(element)
    elif isinstance(node, ast.Dict):
        for value in node.values:
            yield from _strings(value)


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else None


def extract_page_texts(
    fileobj: IO[bytes], keywords: Any, comment_tags: Any, options: dict[str, str]
) -> Iterator[Extracted]:
    """Babel's extractor interface: (line, function name, message, translator comments)."""
    calls = set(options.get("calls", "").split())
    constants = set(options.get("constants", "").split())
    tree = ast.parse(fileobj.read().decode(options.get("encoding", "utf-8")))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _name(node.func) in calls:
            for argument in node.args:
                for found in _strings(argument):
                    yield found.lineno, None, found.value, []
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id in constants for t in targets) and node.value is not None:
            for found in _strings(node.value):
                yield found.lineno, None, found.value, []
