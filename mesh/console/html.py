"""HTML built by functions that escape every string they are given.

A page is assembled from :func:`el` calls; only :class:`Markup` (what :func:`el` returns)
passes through unescaped. A record's value or header holding ``<script>`` therefore
reaches the browser as text, without a template engine and without relying on each
call site to remember :func:`html.escape`.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

__all__ = ["Markup", "el", "escape", "join"]


class Markup(str):
    """Text that is already HTML."""

    __slots__ = ()


def escape(value: Any) -> Markup:
    """*value* as HTML text; Markup is returned as it is."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def join(*parts: Any) -> Markup:
    """The parts in order; nested lists are flattened, None and False are left out."""
    return Markup("".join(_flat(parts)))


def el(tag: str, *children: Any, **attrs: Any) -> Markup:
    """``<tag attrs>children</tag>``. Attribute names drop a trailing ``_`` (``class_``) and
    turn ``_`` into ``-`` (``aria_label``); True is a bare attribute, None and False none."""
    rendered = []
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        name = key.rstrip("_").replace("_", "-")
        rendered.append(f" {name}" if value is True else f' {name}="{escape(value)}"')
    opening = f"<{tag}{''.join(rendered)}>"
    if tag in _VOID:
        return Markup(opening)
    return Markup(f"{opening}{''.join(_flat(children))}</{tag}>")


_VOID = frozenset({"br", "hr", "img", "input", "link", "meta"})


def _flat(parts: Iterable[Any]) -> Iterable[str]:
    for part in parts:
        if part is None or part is False:
            continue
        if isinstance(part, list | tuple):
            yield from _flat(part)
        else:
            yield escape(part)
