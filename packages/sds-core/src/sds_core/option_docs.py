"""A plugin's options as `sds plugins show` prints them: name, type, default and the comment that
documents each field of its config dataclass in the source (the comment lines right above the
field and the one at the end of its line). No torch."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
from dataclasses import dataclass
from typing import Any

from sds_core.config import config_to_dict


@dataclass
class OptionDoc:
    name: str
    type: str
    default: Any  # as in the JSON config tree
    doc: str


def _field_comments(cls: type) -> dict[str, str]:
    """{field: comment} for the fields a class body declares (not inherited ones)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (a class made at run time)
        return {}
    comments: dict[int, str] = {}  # line -> comment text
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.add(tok.start[0])
    body = ast.parse(source).body[0]
    found: dict[str, str] = {}
    previous: ast.AnnAssign | None = None
    for node in getattr(body, "body", []):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above: list[str] = []
        line = node.lineno - 1
        while line in comments and line not in code_lines:
            above.insert(0, comments[line])
            line -= 1
        above = [text for text in above if not text.startswith("---")]  # section rulers
        trailing = [comments[n] for n in range(node.lineno, (node.end_lineno or node.lineno) + 1) if n in comments]
        doc = " ".join(above + trailing)
        if not doc and previous is not None and previous.end_lineno == node.lineno - 1:
            # an undocumented field right under a documented one belongs to its comment
            name = previous.target.id  # type: ignore[union-attr]
            above_doc = found.get(name, "")
            doc = above_doc if above_doc.startswith("see ") else (f"see {name}" if above_doc else "")
        found[node.target.id] = doc
        previous = node
    return found


def option_docs(config: type) -> list[OptionDoc]:
    """Every option of a config dataclass, inherited ones included, in declaration order."""
    comments: dict[str, str] = {}
    for klass in reversed(config.__mro__):
        if dataclasses.is_dataclass(klass):
            comments.update(_field_comments(klass))
    defaults = config_to_dict(config())
    return [
        OptionDoc(
            f.name,
            f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type)),
            defaults[f.name],
            comments.get(f.name, ""),
        )
        for f in dataclasses.fields(config)
    ]
