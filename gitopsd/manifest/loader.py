"""Snapshot → DesiredState: read every manifest, validate it, compile its modules.

Nothing of an invalid snapshot may be applied, so the loader never stops at the first
problem: it collects every one it can find, as `file:line: message`, and raises them together
as InvalidManifests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from gitopsd.errors import InvalidManifests, ManifestProblem
from gitopsd.manifest.deploy_windows import DeployWindows
from gitopsd.manifest.desired import DesiredFunction, DesiredNode, DesiredState
from gitopsd.manifest.lines import line_of_byte
from gitopsd.manifest.models import (
    API_VERSION,
    KINDS,
    MANIFEST_MODELS,
    AnyManifest,
    DeployPolicyManifest,
    EdgeFunctionManifest,
    EdgeNodeManifest,
    agent_identity,
)
from gitopsd.manifest.modules import ModuleCompiler, ModuleRefused
from gitopsd.manifest.overrides import dead_parts, override_matches
from gitopsd.manifest.problems import validation_problems
from gitopsd.manifest.yamltree import Defect, Document, NodeBudget, parse_documents
from gitopsd.source.snapshot import Snapshot

MANIFEST_SUFFIXES = (".yaml", ".yml")
DEFAULT_MAX_MANIFEST_BYTES = 1 << 20
DEFAULT_MAX_MODULE_BYTES = 8 << 20
# Fleets as large as bench/ measures (2,000 functions + 500 nodes; 10k functions + 1k nodes)
# must load: the cap only stops a runaway multi-document file.
DEFAULT_MAX_DOCUMENTS = 20_000

_KIND_LIST = f"{', '.join(KINDS[:-1])} or {KINDS[-1]}"


def load_snapshot(
    snapshot: Snapshot,
    *,
    max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES,
    max_module_bytes: int = DEFAULT_MAX_MODULE_BYTES,
    max_documents: int = DEFAULT_MAX_DOCUMENTS,
) -> DesiredState:
    """The desired state of `snapshot`, or InvalidManifests listing every problem found.

    Reads every `*.yaml`/`*.yml` file (multi-document) outside hidden directories: a repository
    root holds `.github/workflows/*.yml` and friends, which are not ours. `max_documents` counts
    non-empty documents over the whole snapshot.
    """
    return _Load(snapshot, max_manifest_bytes, max_module_bytes, max_documents).run()


def manifest_paths(snapshot: Snapshot) -> list[str]:
    """Snapshot-relative paths of the files the loader reads, sorted."""
    return sorted(
        path
        for path in snapshot.files
        if path.lower().endswith(MANIFEST_SUFFIXES)
        and not any(part.startswith(".") for part in path.split("/"))
    )


@dataclass(frozen=True)
class _Doc:
    path: str
    document: Document
    kind: str
    name: str | None  # metadata.name as written, even when the document is invalid
    manifest: AnyManifest | None  # None: invalid

    def line_of(self, *loc: int | str) -> int:
        return self.document.tree.resolve(loc)[0]

    @property
    def source(self) -> str:
        return f"{self.path}:{self.document.line}"


class _Load:
    def __init__(
        self, snapshot: Snapshot, max_manifest_bytes: int, max_module_bytes: int, max_documents: int
    ) -> None:
        self.snapshot = snapshot
        self.max_manifest_bytes = max_manifest_bytes
        self.max_documents = max_documents
        self.compiler = ModuleCompiler(snapshot, max_module_bytes=max_module_bytes)
        self.problems: list[ManifestProblem] = []
        self.warnings: list[str] = []
        self.docs: list[_Doc] = []
        self.document_count = 0
        self.function_docs: dict[str, _Doc] = {}
        self.nodes = NodeBudget()  # every file of the commit together
        # Set when some document could not be read: the names it declares are unknown, so a
        # dependsOn naming them is not reported as unknown (it would only add noise).
        self.incomplete = False

    def problem(self, path: str, line: int, message: str) -> None:
        self.problems.append(ManifestProblem(path, line, message))

    def run(self) -> DesiredState:
        paths = manifest_paths(self.snapshot)
        if not paths:
            self.warnings.append("no manifests (*.yaml, *.yml) in the snapshot")
        for path in paths:
            if not self._read_file(path):
                break
        unique = self._unique_docs()
        nodes = self._nodes(unique)
        functions = self._functions(unique)
        self._check_dependencies(functions)
        if self.problems:
            raise InvalidManifests(self.problems)
        state = DesiredState(
            commit=self.snapshot.commit,
            nodes=MappingProxyType(dict(sorted(nodes.items()))),
            functions=MappingProxyType(dict(sorted(functions.items()))),
        )
        self._warn_targets(state)
        return dataclasses.replace(state, warnings=tuple(self.warnings))

    # -- files and documents --------------------------------------------------------------

    def _read_file(self, path: str) -> bool:
        """Read the documents of one file; False once max_documents is exceeded."""
        entry = self.snapshot.files[path]
        if entry.is_symlink:
            self.incomplete = True
            self.problem(path, 1, "manifest is a symlink: symlinks are refused, commit the file")
            return True
        if len(entry.data) > self.max_manifest_bytes:
            self.incomplete = True
            self.problem(
                path,
                1,
                f"file is {len(entry.data)} bytes, over the limit of {self.max_manifest_bytes} "
                "for a manifest",
            )
            return True
        try:
            text = entry.data.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError as exc:
            self.incomplete = True
            line = line_of_byte(entry.data, exc.start)
            self.problem(path, line, f"invalid UTF-8 at byte {exc.start}: manifests must be UTF-8")
            return True
        for item in parse_documents(text, self.nodes):
            if isinstance(item, Defect):
                self.incomplete = True
                self.problem(path, item.line, item.message)
                continue
            self.document_count += 1
            if self.document_count > self.max_documents:
                self.incomplete = True
                self.problem(
                    path,
                    item.line,
                    f"too many documents: the snapshot holds more than {self.max_documents}",
                )
                return False
            for defect in item.defects:
                self.problem(path, defect.line, defect.message)
            self._read_document(path, item)
        return True

    def _read_document(self, path: str, document: Document) -> None:
        value = document.value
        if not isinstance(value, dict):
            self.problem(
                path,
                document.line,
                "a manifest must be a mapping with apiVersion, kind, metadata and spec",
            )
            return
        line = document.tree.resolve
        if "apiVersion" not in value:
            self.problem(path, document.line, f"missing apiVersion: expected {API_VERSION!r}")
            return
        if value["apiVersion"] != API_VERSION:
            self.problem(
                path,
                line(("apiVersion",))[0],
                f"unknown apiVersion {value['apiVersion']!r}: expected {API_VERSION!r}",
            )
            return
        kind = value.get("kind")
        if "kind" not in value:
            self.problem(path, document.line, f"missing kind: expected {_KIND_LIST}")
            return
        if not isinstance(kind, str) or kind not in MANIFEST_MODELS:
            self.problem(path, line(("kind",))[0], f"unknown kind {kind!r}: expected {_KIND_LIST}")
            return
        model = MANIFEST_MODELS[kind]
        manifest: AnyManifest | None = None
        try:
            # by_name=False: YAML must use the camelCase names; snake_case is Python's business.
            manifest = model.model_validate(value, by_alias=True, by_name=False)
        except ValidationError as exc:
            self.problems.extend(validation_problems(path, document.tree, exc, model))
        self.docs.append(_Doc(path, document, kind, _raw_name(value), manifest))

    def _unique_docs(self) -> list[_Doc]:
        """Documents whose (kind, name) was not seen before; a problem for each repeat."""
        first: dict[tuple[str, str], _Doc] = {}
        unique: list[_Doc] = []
        for doc in self.docs:
            if doc.name is None:
                unique.append(doc)
                continue
            earlier = first.setdefault((doc.kind, doc.name), doc)
            if earlier is doc:
                unique.append(doc)
                continue
            self.problem(
                doc.path,
                doc.line_of("metadata", "name"),
                f"duplicate {doc.kind} name {doc.name!r}: first defined at "
                f"{earlier.path}:{earlier.line_of('metadata', 'name')}",
            )
        return unique

    # -- nodes and functions --------------------------------------------------------------

    def _nodes(self, docs: list[_Doc]) -> dict[str, DesiredNode]:
        nodes: dict[str, DesiredNode] = {}
        by_address: dict[str, DesiredNode] = {}
        for doc in docs:
            if not isinstance(doc.manifest, EdgeNodeManifest):
                continue
            meta, spec = doc.manifest.metadata, doc.manifest.spec
            node = DesiredNode(
                name=meta.name,
                address=spec.agent_address(meta.name),
                region=spec.region,
                labels=MappingProxyType(dict(meta.labels)),
                source=doc.source,
            )
            if spec.address is None:  # dial-out: known by its name, unique already
                nodes[node.name] = node
                continue
            other = by_address.setdefault(agent_identity(spec.address), node)
            if other is not node:
                # Two names for one agent would make the diff fight itself.
                self.problem(
                    doc.path,
                    doc.line_of("spec", "address"),
                    f"address {spec.address!r} is already the address of node {other.name!r} "
                    f"({other.source})",
                )
            nodes[node.name] = node
        return nodes

    def _policy(self, docs: list[_Doc]) -> DeployWindows | None:
        """The DeployPolicy's deploy windows; a second DeployPolicy is a problem (which of
        two fleet-wide defaults applies would depend on file order)."""
        found = [d for d in docs if isinstance(d.manifest, DeployPolicyManifest)]
        for extra in found[1:]:
            self.problem(
                extra.path,
                extra.document.line,
                f"a second DeployPolicy: {found[0].name!r} ({found[0].source}) already sets "
                "the fleet's defaults; keep one",
            )
        first = found[0].manifest if found else None
        return first.spec.deploy_windows if isinstance(first, DeployPolicyManifest) else None

    def _functions(self, docs: list[_Doc]) -> dict[str, DesiredFunction]:
        functions: dict[str, DesiredFunction] = {}
        policy = self._policy(docs)
        for doc in docs:
            if doc.kind == "EdgeFunction" and doc.manifest is None:
                self._check_module_of_invalid(doc)
                continue
            if not isinstance(doc.manifest, EdgeFunctionManifest):
                continue
            meta, spec = doc.manifest.metadata, doc.manifest.spec
            try:
                module = self.compiler.compile(doc.path, spec.module)
            except ModuleRefused as exc:
                self.problem(doc.path, doc.line_of("spec", "module"), str(exc))
                continue
            if spec.sha256 is not None and spec.sha256 != module.sha256:
                self.problem(
                    doc.path,
                    doc.line_of("spec", "sha256"),
                    f"sha256 mismatch: manifest pins {spec.sha256}, module compiles to "
                    f"{module.sha256}",
                )
            if "_start" not in module.exports:
                self.problem(
                    doc.path,
                    doc.line_of("spec", "module"),
                    f"module {module.path!r} exports no function '_start' (the request handler)",
                )
            health = spec.health_check.function
            if health not in module.exports:
                # The default health function is written nowhere: blame the module line then.
                line, found = doc.document.tree.resolve(("spec", "healthCheck", "function"))
                self.problem(
                    doc.path,
                    line if len(found) == 3 else doc.line_of("spec", "module"),
                    f"module {module.path!r} exports no function {health!r} "
                    "(spec.healthCheck.function)",
                )
            for index, override in enumerate(spec.overrides):
                for where, why in dead_parts(spec, override):
                    self.problem(doc.path, doc.line_of("spec", "overrides", index, *where), why)
            self.function_docs[meta.name] = doc
            functions[meta.name] = DesiredFunction(
                name=meta.name,
                # The fleet's deploy windows, unless the function has its own.
                spec=spec
                if spec.deploy_windows is not None or policy is None
                else spec.model_copy(update={"deploy_windows": policy}),
                module=module,
                source=doc.source,
                labels=MappingProxyType(dict(meta.labels)),
            )
        return functions

    def _check_module_of_invalid(self, doc: _Doc) -> None:
        """The module of a function whose other fields are invalid, checked all the same: every
        problem in one run, not a missing module found only once the rest is fixed."""
        value = doc.document.value
        spec = value.get("spec") if isinstance(value, dict) else None
        module = spec.get("module") if isinstance(spec, dict) else None
        if not isinstance(module, str) or not 0 < len(module) <= 4096:
            return  # a missing, mistyped or oversized module is already a validation problem
        try:
            self.compiler.compile(doc.path, module)
        except ModuleRefused as exc:
            self.problem(doc.path, doc.line_of("spec", "module"), str(exc))

    def _check_dependencies(self, functions: dict[str, DesiredFunction]) -> None:
        declared = {d.name for d in self.docs if d.kind == "EdgeFunction" and d.name}
        docs = self.function_docs
        if not self.incomplete:
            for name, doc in docs.items():
                for index, dep in enumerate(functions[name].spec.depends_on):
                    if dep not in declared:
                        self.problem(
                            doc.path,
                            doc.line_of("spec", "dependsOn", index),
                            f"dependsOn names unknown function {dep!r}",
                        )
        graph = {
            name: {d for d in f.spec.depends_on if d in functions} for name, f in functions.items()
        }
        for cycle in find_cycles(graph):
            doc = docs[cycle[0]]
            index = list(functions[cycle[0]].spec.depends_on).index(cycle[1 % len(cycle)])
            self.problem(
                doc.path,
                doc.line_of("spec", "dependsOn", index),
                "dependency cycle: " + " -> ".join([*cycle, cycle[0]]),
            )

    def _warn_targets(self, state: DesiredState) -> None:
        regions = {node.region for node in state.nodes.values()}
        for name, function in state.functions.items():
            targets = function.spec.targets
            if not state.targets_of(name):
                wanted = []
                if targets.regions is not None:
                    wanted.append("regions " + ", ".join(targets.regions))
                if targets.selector:
                    wanted.append(
                        "selector " + ", ".join(f"{k}={v}" for k, v in targets.selector.items())
                    )
                detail = f" ({'; '.join(wanted)})" if wanted else ""
                self.warnings.append(
                    f"{function.source}: function {name!r} matches no node{detail}"
                )
                continue
            self._warn_overrides(state, name)
            unknown = [r for r in targets.regions or () if r not in regions]
            if unknown:
                self.warnings.append(
                    f"{function.source}: function {name!r} targets regions with no node: "
                    + ", ".join(unknown)
                )

    def _warn_overrides(self, state: DesiredState, name: str) -> None:
        """A warning for each override that matches none of the function's target nodes
        today: not a problem, since the nodes it is for may come (as a function that matches
        no node is a warning)."""
        spec = state.functions[name].spec
        doc = self.function_docs[name]
        nodes = [state.nodes[n] for n in state.targets_of(name)]
        for index, override in enumerate(spec.overrides):
            if not any(override_matches(override, n.region, n.labels) for n in nodes):
                line = doc.line_of("spec", "overrides", index)
                self.warnings.append(
                    f"{doc.path}:{line}: override {index + 1} of function {name!r} matches "
                    "none of its target nodes"
                )


def find_cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """Each dependency cycle of `graph` (name → names it depends on) once, smallest name first.

    Iterative (a chain of a thousand functions must not hit the recursion limit).
    """
    remaining = {name: set(deps) for name, deps in graph.items()}
    cycles: list[tuple[str, ...]] = []
    while True:
        _drop_acyclic(remaining)
        if not remaining:
            return cycles
        # Every remaining name depends on another remaining one, so this walk must loop.
        path: list[str] = []
        seen: dict[str, int] = {}
        current = min(remaining)
        while current not in seen:
            seen[current] = len(path)
            path.append(current)
            current = min(remaining[current] & remaining.keys())
        cycle = path[seen[current] :]
        start = cycle.index(min(cycle))
        cycles.append(tuple(cycle[start:] + cycle[:start]))
        for name in cycle:
            del remaining[name]
        for deps in remaining.values():
            deps.difference_update(cycle)


def _drop_acyclic(graph: dict[str, set[str]]) -> None:
    """Remove, in place, every name that depends (transitively) on nothing cyclic."""
    changed = True
    while changed:
        free = [name for name, deps in graph.items() if not deps & graph.keys()]
        changed = bool(free)
        for name in free:
            del graph[name]


def _raw_name(value: dict[Any, Any]) -> str | None:
    metadata = value.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("name"), str):
        return str(metadata["name"])
    return None
