"""Imports run one way (issue 24): the package root only hands names on, no module
takes a name from the root, no two modules import each other (directly or round about,
function-level imports included), and no lower layer imports a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.tier1

PACKAGE = Path(__file__).resolve().parent.parent / "hvlibvirt"

# Layers from the top: a module may import its own layer's and lower layers' modules.
# Modules not named sit in the bottom layer (the builders, the tables, the facts).
LAYERS: list[set[str]] = [
    {"hvlibvirt", "hvlibvirt.__main__", "hvlibvirt.cli", "hvlibvirt.demo", "hvlibvirt.ganeti",
     "hvlibvirt.ganeti.check", "hvlibvirt.ganeti.node", "hvlibvirt.ganeti.running"},
    {"hvlibvirt.hypervisors"},
    {"hvlibvirt.kvm", "hvlibvirt.xen"},
    {"hvlibvirt.base"},
    {"hvlibvirt.migrator", "hvlibvirt.hotplug", "hvlibvirt.hotplug.kvm", "hvlibvirt.hotplug.xen"},
    {"hvlibvirt.hotplug.flow"},
    {"hvlibvirt.hotplug.steps"},
    {"hvlibvirt.handover"},
    {"hvlibvirt.handover.back"},
    {"hvlibvirt.host", "hvlibvirt.domains", "hvlibvirt.drift", "hvlibvirt.migration"},
    {"hvlibvirt.ownership", "hvlibvirt.instance_metadata"},
]
# The root's own names a module may take from it.
ROOT_NAMES = {"__version__"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, str | None]]:
    """(module imported, name taken from it or None) for every import in ``path``."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.module, alias.name) for alias in node.names]
    return found


def _edges(name: str) -> set[str]:
    """The package's modules ``name`` imports."""
    edges = set()
    for module, taken in _imports(MODULES[name]):
        if taken is not None and f"{module}.{taken}" in MODULES:
            edges.add(f"{module}.{taken}")
        elif module in MODULES:
            edges.add(module)
    edges.discard(name)
    return edges


def _layer(name: str) -> int:
    """0 at the top; every unnamed module is in the bottom layer."""
    for depth, layer in enumerate(LAYERS):
        if name in layer:
            return depth
    return len(LAYERS)


def test_the_layers_name_only_existing_modules() -> None:
    assert set().union(*LAYERS) <= set(MODULES)


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n != "hvlibvirt"))
def test_no_module_takes_a_name_from_the_package_root(name: str) -> None:
    taken = {t for m, t in _imports(MODULES[name])
             if m == "hvlibvirt" and t and f"hvlibvirt.{t}" not in MODULES}
    assert taken <= ROOT_NAMES, f"{name} takes {sorted(taken - ROOT_NAMES)} from the root"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_import_runs_up_a_layer(name: str) -> None:
    up = sorted(m for m in _edges(name) if _layer(m) < _layer(name))
    assert not up, f"{name} (layer {_layer(name)}) imports higher layers: {up}"


def test_no_import_cycle() -> None:
    graph = {name: _edges(name) for name in MODULES}
    # The root's lazy import of the hypervisor classes is the one way down from it.
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(
                    path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
