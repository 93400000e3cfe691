"""YAML with a budget, checked before any Python object is built.

A few hundred KB of YAML can alias one anchor into billions of nodes ("billion laughs"): PyYAML
shares the aliased objects, but everything that walks the result afterwards (validation, dumping)
expands them. So the text size is capped, the composed node graph is walked once (memoised per
node, so the walk costs the graph's size, not the expansion's) and refused past a node budget, and
nesting is capped while composing, before Python's recursion limit.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 1024 * 1024
# Nodes after expanding every alias: a config with 5,000 repositories stays far below it.
MAX_NODES = 200_000
# A config is under 10 levels deep; 64 leaves room and stays far from the recursion limit.
MAX_DEPTH = 64


class YamlBudgetError(Exception):
    """The text is over a budget; the message says which (and never quotes the text)."""


class DuplicateKeyError(Exception):
    """A mapping gives one key twice: PyYAML would keep the last silently, so a setting the
    reader sees could be one that is not used."""


def _no_duplicate_keys(node: MappingNode) -> None:
    first: dict[str, int] = {}
    for key, _ in node.value:
        if not isinstance(key, ScalarNode):
            continue
        line = key.start_mark.line + 1
        if key.value in first:
            name = key.value if len(key.value) <= 60 else key.value[:57] + "..."
            raise DuplicateKeyError(
                f"duplicate key {name!r} at line {line} (first at line {first[key.value]})"
            )
        first[key.value] = line


class _DepthLimitedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses nesting past MAX_DEPTH instead of recursing on."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlBudgetError(f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Expansion:
    """Expanded size of nodes, memoised by identity; an alias of an enclosing node is refused."""

    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}
        self.open: set[int] = set()

    def size(self, node: Node, depth: int = 0) -> int:
        known = self.sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in self.open:
            raise YamlBudgetError("an alias refers to itself")
        if depth > MAX_DEPTH:
            raise YamlBudgetError(f"nested deeper than {MAX_DEPTH} levels once aliases expand")
        if isinstance(node, MappingNode):
            _no_duplicate_keys(node)
        self.open.add(id(node))
        total = 1
        for child in _children(node):
            total += self.size(child, depth + 1)
            if total > MAX_NODES:
                raise YamlBudgetError(_too_many())
        self.open.discard(id(node))
        self.sizes[id(node)] = total
        return total


def _too_many() -> str:
    return f"expands to more than {MAX_NODES} YAML nodes (aliases counted each time they are used)"


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check(root: Node) -> None:
    """Within MAX_NODES; a top-level key that breaks the budget is named."""
    expansion = _Expansion()
    if not isinstance(root, MappingNode):
        expansion.size(root)
        return
    _no_duplicate_keys(root)
    total = 1
    for key, value in root.value:
        name = key.value if isinstance(key, ScalarNode) else "(a complex key)"
        try:
            total += expansion.size(key, 1) + expansion.size(value, 1)
        except YamlBudgetError as exc:
            raise YamlBudgetError(f"{name}: {exc}") from None
        if total > MAX_NODES:
            raise YamlBudgetError(f"{name}: {_too_many()}")


def load(text: str) -> Any:
    """Like yaml.safe_load, within MAX_BYTES, MAX_DEPTH and MAX_NODES (YamlBudgetError past one;
    DuplicateKeyError for a key given twice in a mapping; yaml.YAMLError for text that isn't
    YAML)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise YamlBudgetError(f"larger than {MAX_BYTES // (1024 * 1024)} MiB")
    loader = _DepthLimitedLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check(root)
        return loader.construct_document(root)
    finally:
        loader.dispose()
