"""YAML documents as plain values plus the line of every key, for `file:line` errors.

We compose with PyYAML's SafeLoader and build the Python values ourselves instead of calling
`yaml.safe_load`, so that we can:

- keep each key's line, to point a pydantic error `loc` at the line to fix;
- refuse duplicate keys, which `safe_load` silently overwrites;
- bound what anchors and aliases may expand to (a few hundred bytes of aliases can stand for
  a billion nodes), and how deep documents nest (the composer recurses);
- number lines as an editor does (`lines.py`), not as PyYAML does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gitopsd.manifest.lines import LineIndex

MAX_DEPTH = 64
MAX_ALIASES = 100  # alias uses per document
MAX_ALIAS_EXPANSION = 10_000  # nodes added by alias expansion per document
# YAML nodes composed per commit, all files together: PyYAML composes some 10^5 nodes a
# second, so 64 MiB of flow lists within every byte limit would hold the loader for minutes.
# A 10,000-function, 5,000-node fleet is about 400,000 nodes.
MAX_NODES = 1_000_000

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(_TAG + t for t in ("null", "bool", "int", "float", "str", "timestamp"))
_MERGE_TAG = _TAG + "merge"


@dataclass(frozen=True)
class Defect:
    """A problem found while reading YAML: 1-based line and message (the path is the caller's)."""

    line: int
    message: str


@dataclass(frozen=True)
class Located:
    """Where a value sits: its line (a key's line for mapping values) and its children's."""

    line: int
    keys: Mapping[Any, Located] | None = None
    items: tuple[Located, ...] | None = None

    def resolve(self, loc: tuple[int | str, ...]) -> tuple[int, tuple[int | str, ...]]:
        """The line of the deepest node `loc` reaches, and the parts of `loc` that matched.

        Parts that name nothing here (a union tag pydantic inserts, a missing key) are skipped,
        so the line falls back to the closest existing ancestor.
        """
        node = self
        matched: list[int | str] = []
        for part in loc:
            child: Located | None = None
            if node.keys is not None:
                child = node.keys.get(part)
            elif node.items is not None and isinstance(part, int) and 0 <= part < len(node.items):
                child = node.items[part]
            if child is not None:
                node = child
                matched.append(part)
        return node.line, tuple(matched)


@dataclass(frozen=True)
class Document:
    """One non-empty YAML document: its value, where its parts are, and non-fatal defects."""

    value: Any
    tree: Located
    defects: tuple[Defect, ...] = ()

    @property
    def line(self) -> int:
        """Line of the document's first content."""
        return self.tree.line


class _Refused(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.defect = Defect(line, message)


@dataclass
class NodeBudget:
    """The YAML nodes one load may still compose (shared by every file of a commit)."""

    left: int = field(default_factory=lambda: MAX_NODES)


class _Loader(yaml.SafeLoader):
    """SafeLoader whose composer counts alias uses and nesting depth per document, and the
    nodes of the whole load against its budget."""

    def __init__(self, text: str, budget: NodeBudget) -> None:
        super().__init__(text)
        self.lines = LineIndex(text)
        self.budget = budget
        self._aliases = 0
        self._depth = 0

    def editor_line(self, mark: yaml.Mark | None) -> int:
        """The editor line of a PyYAML mark (its `.line` counts NEL, U+2028 and U+2029)."""
        return self.lines.line(mark.index) if mark is not None else 1

    def compose_document(self) -> Node | None:
        self._aliases = 0
        return super().compose_document()

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise _Refused(
                    self.editor_line(mark),
                    f"more than {MAX_ALIASES} YAML aliases in one document: refused",
                )
        self.budget.left -= 1
        if self.budget.left < 0:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise _Refused(
                self.editor_line(mark),
                f"the manifests hold more than {MAX_NODES:,} YAML nodes in all: refused",
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise _Refused(
                    self.editor_line(mark), f"YAML nested deeper than {MAX_DEPTH} levels"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def parse_documents(text: str, budget: NodeBudget | None = None) -> Iterator[Document | Defect]:
    """Each non-empty document of `text`, in order; a Defect ends the stream when it is fatal.

    Empty documents (`---` alone, comments only, `null`) are skipped. `budget` is shared by
    the files of one load (a fresh one per call when not given).
    """
    try:
        # The reader checks every character up front: a control character fails right here.
        loader = _Loader(text, budget if budget is not None else NodeBudget())
    except yaml.reader.ReaderError as exc:
        yield _reader_defect(LineIndex(text), exc)
        return
    try:
        while True:
            try:
                if not loader.check_node():
                    return
                node = loader.get_node()
            except _Refused as exc:
                yield exc.defect
                return
            except yaml.MarkedYAMLError as exc:
                yield _syntax_defect(loader, exc)
                return
            except yaml.reader.ReaderError as exc:  # pragma: no cover - caught up front
                yield _reader_defect(loader.lines, exc)
                return
            except yaml.YAMLError as exc:  # pragma: no cover - every PyYAML error is one of above
                yield Defect(1, f"invalid YAML: {exc}")
                return
            if node is None or (isinstance(node, ScalarNode) and node.tag == _TAG + "null"):
                continue
            yield _build_document(loader, node)
    finally:
        loader.dispose()


def _reader_defect(lines: LineIndex, exc: yaml.reader.ReaderError) -> Defect:
    line = lines.line(exc.position)
    char = exc.character if isinstance(exc.character, int) else ord(exc.character)
    return Defect(line, f"invalid character U+{char:04X} in YAML: {exc.reason}")


def _syntax_defect(loader: _Loader, exc: yaml.MarkedYAMLError) -> Defect:
    line = loader.editor_line(exc.problem_mark or exc.context_mark)
    message = exc.problem or "malformed document"
    if exc.context:
        message += f" ({exc.context}"
        if exc.context_mark is not None and loader.editor_line(exc.context_mark) != line:
            message += f" at line {loader.editor_line(exc.context_mark)}"
        message += ")"
    hidden = loader.lines.yaml11_breaks(line)
    if hidden:
        # Where the editor shows one line, YAML 1.1 sees several: say why the error is odd.
        message += f"; this line holds {', '.join(hidden)}, which YAML 1.1 reads as a line break"
    return Defect(line, f"invalid YAML: {message}")


def _build_document(loader: _Loader, root: Node) -> Document | Defect:
    builder = _Builder(loader)
    try:
        value, tree = builder.build(root, 0)
    except _Refused as exc:
        return exc.defect
    return Document(value, tree, tuple(builder.defects))


class _Builder:
    """Turns one document's node graph into values, counting nodes reached again via aliases."""

    def __init__(self, loader: _Loader) -> None:
        self._loader = loader
        self._seen: set[int] = set()
        self._expanded = 0
        self.defects: list[Defect] = []

    def _line(self, node: Node) -> int:
        return self._loader.editor_line(node.start_mark)

    def build(
        self, node: Node, depth: int, where: int | None = None, aliased: bool = False
    ) -> tuple[Any, Located]:
        """Value and location of `node`.

        Inside an alias expansion, nodes carry the marks of their anchor; `where` keeps the line
        of the original text that led here (the alias use), which is what a problem should name.
        """
        line = self._line(node)
        aliased = aliased or id(node) in self._seen
        if not aliased or where is None:
            where = line
        if depth > MAX_DEPTH:  # only reachable through an alias of an ancestor (a cycle)
            raise _Refused(where, f"YAML nested deeper than {MAX_DEPTH} levels (recursive alias?)")
        if aliased:
            self._expanded += 1
            if self._expanded > MAX_ALIAS_EXPANSION:
                raise _Refused(
                    where, f"YAML aliases expand to more than {MAX_ALIAS_EXPANSION} nodes: refused"
                )
        else:
            self._seen.add(id(node))
        if isinstance(node, ScalarNode):
            return self._scalar(node), Located(line)
        if isinstance(node, SequenceNode):
            self._check_tag(node, _TAG + "seq")
            built = [self.build(child, depth + 1, where, aliased) for child in node.value]
            return [v for v, _ in built], Located(line, items=tuple(loc for _, loc in built))
        if isinstance(node, MappingNode):
            self._check_tag(node, _TAG + "map")
            return self._mapping(node, depth, where, aliased)
        raise _Refused(line, "unsupported YAML node")  # pragma: no cover - no other node kinds

    def _scalar(self, node: ScalarNode) -> Any:
        line = self._line(node)
        if node.tag not in _SCALAR_TAGS:
            raise _Refused(line, f"unsupported YAML tag {_tag(node.tag)}")
        construct: Callable[[yaml.SafeLoader, ScalarNode], Any]
        construct = yaml.SafeLoader.yaml_constructors[node.tag]
        try:
            return construct(self._loader, node)
        except (ValueError, OverflowError, yaml.YAMLError) as exc:
            kind = node.tag.removeprefix(_TAG)
            raise _Refused(line, f"invalid {kind} {_short(node.value)}: {exc}") from None

    def _check_tag(self, node: Node, expected: str) -> None:
        if node.tag != expected:
            raise _Refused(self._line(node), f"unsupported YAML tag {_tag(node.tag)}")

    def _mapping(
        self, node: MappingNode, depth: int, where: int, aliased: bool
    ) -> tuple[dict[Any, Any], Located]:
        values: dict[Any, Any] = {}
        placed: dict[Any, Located] = {}
        merges: list[tuple[int, Node]] = []
        for key_node, value_node in node.value:
            key_line = self._line(key_node)
            if key_node.tag == _MERGE_TAG:
                merges.append((key_line, value_node))
                continue
            if not isinstance(key_node, ScalarNode):
                raise _Refused(key_line, "mapping keys must be plain scalars")
            key = self._scalar(key_node)
            value, located = self.build(
                value_node, depth + 1, where if aliased else key_line, aliased
            )
            if key in placed:
                self.defects.append(
                    Defect(
                        key_line, f"duplicate key {_short(key)} (first at line {placed[key].line})"
                    )
                )
            values[key] = value
            placed[key] = Located(key_line, located.keys, located.items)
        # `<<: *base` merge keys: explicit keys win, then earlier merged mappings win.
        for merge_line, merge in merges:
            sources = merge.value if isinstance(merge, SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, MappingNode):
                    raise _Refused(self._line(source), "a merge key '<<' takes a mapping or a list")
                merged, located = self.build(
                    source, depth + 1, where if aliased else merge_line, aliased
                )
                assert located.keys is not None
                for key, value in merged.items():
                    if key not in placed:
                        values[key] = value
                        placed[key] = located.keys[key]
        return values, Located(self._line(node), keys=placed)


def _tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
