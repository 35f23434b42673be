"""What the reference pages read from the code besides values: the comments attached to a
dataclass's fields and to the keys of a dict of paths (a field or a file is explained
once, beside its declaration), and the Markdown helpers the pages share."""

from __future__ import annotations

import ast
import inspect
import io
import textwrap
import tokenize
from collections.abc import Callable
from typing import Any


def replace_between(text: str, name: str, body: str) -> str:
    """`text` with what lies between `<!-- name:start -->` and `<!-- name:end -->`
    replaced by `body` (blank lines around it, so that Markdown sees a block)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    head, found, rest = text.partition(start)
    _, found_end, tail = rest.partition(end)
    if not (found and found_end):
        raise ValueError(f"the page lacks the markers {start} ... {end}")
    return f"{head}{start}\n\n{body.strip()}\n\n{end}{tail}"


def cell(text: str, code: bool = False) -> str:
    """Text for one table cell: on one line, its pipes escaped, and outside a code span
    its `<` too (`<stem>` would be read as an HTML tag, and vanish)."""
    text = " ".join(text.split()).replace("|", "\\|")
    return f"`{text}`" if code else text.replace("<", "&lt;")


def _source_comments(source: str) -> tuple[list[tokenize.TokenInfo], dict, dict]:
    """The tokens of `source`, its comments that are a whole line and those after code
    (line -> text)."""
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    alone: dict[int, str] = {}  # line -> a comment that is the whole line
    trailing: dict[int, str] = {}  # line -> a comment after code
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            first = not tok.line[: tok.start[1]].strip()
            (alone if first else trailing)[tok.start[0]] = text
    return tokens, alone, trailing


def _attached(starts: list[tuple[str, int]], alone: dict, trailing: dict) -> dict[str, str]:
    """name -> the comment ending its line, then the comment lines directly above it."""
    out = {}
    for name, line in starts:
        above: list[str] = []
        while line - 1 - len(above) in alone:
            above.insert(0, alone[line - 1 - len(above)])
        parts = [trailing.get(line, ""), " ".join(above)]
        out[name] = "; ".join(p for p in parts if p)
    return out


def field_comments(cls: type) -> dict[str, str]:
    """A dataclass's fields' comments in its source: the one ending the field's line,
    then the comment lines directly above it."""
    tokens, alone, trailing = _source_comments(textwrap.dedent(inspect.getsource(cls)))
    starts: list[tuple[str, int]] = []
    depth = brackets = 0
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.INDENT:
            depth += 1
        elif tok.type == tokenize.DEDENT:
            depth -= 1
        elif tok.type == tokenize.OP and tok.string in ("(", "[", "{"):
            brackets += 1
        elif tok.type == tokenize.OP and tok.string in (")", "]", "}"):
            brackets -= 1
        elif (
            tok.type == tokenize.NAME
            and depth == 1
            and brackets == 0
            and not tok.line[: tok.start[1]].strip()
            and tokens[i + 1].string == ":"
        ):
            starts.append((tok.string, tok.start[0]))
    return _attached(starts, alone, trailing)


_NOT_CODE = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)


def key_comments(func: Callable[..., Any]) -> dict[str, str]:
    """The comments of the keys of the dict literals in a function's source (the one
    ending a key's line, then the comment lines directly above it): what the file a key
    names holds, for a function that returns a dict of paths."""
    tokens, alone, trailing = _source_comments(textwrap.dedent(inspect.getsource(func)))
    code = [t for t in tokens if t.type not in _NOT_CODE]
    starts: list[tuple[str, int]] = []
    for before, tok, after in zip(code, code[1:], code[2:], strict=False):
        if (
            tok.type == tokenize.STRING
            and after.string == ":"
            and before.string in ("{", ",")
            and not tok.string.lower().startswith(("f", "rf", "fr", "b"))
        ):
            starts.append((ast.literal_eval(tok.string), tok.start[0]))
    return _attached(starts, alone, trailing)
