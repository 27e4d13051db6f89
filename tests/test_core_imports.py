"""The pure core imports no adapter (STYLE.md: pure core).

The core is plain data in, plain data out: the domain and its markets, the engines behind
the one `Engine` protocol, the reconcile rules, the FIS template model and the experiment
state machine. It imports only the standard library's plain-data modules (each core module
names the few more it needs) and other core modules, so nothing it reaches, however
indirectly, is Django, boto3, Channels, Redis, a thread or any project adapter (a store, a
queue, the AWS clients, an API, a view, a consumer, the events, the runtime).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What every core module may import from the standard library.
PLAIN = frozenset({"__future__", "collections", "dataclasses", "decimal", "typing"})

# The core, each module with the standard library modules it may import besides PLAIN.
# A core module may import another one; any other project module is an adapter.
CORE: dict[str, frozenset[str]] = {
    "trading.markets": frozenset(),
    "trading.names": frozenset(),
    "trading.domain": frozenset({"hashlib", "json"}),
    "simfill.engine": frozenset({"random"}),  # a seeded random.Random, never the global one
    "matcher.protocol": frozenset(),
    "matcher.book": frozenset({"heapq"}),
    "matcher.engines": frozenset(),
    "matcher.stream": frozenset(),
    "reconcile_panel.reconciler": frozenset({"hashlib"}),
    "faults.templates": frozenset({"re"}),
    "faults.experiment": frozenset({"math", "random"}),
}

# Named in a failure, to say why it is wrong.
ADAPTER_PACKAGES = frozenset({"boto3", "botocore", "django", "channels", "channels_redis", "redis", "moto", "daphne", "asgiref"})


def _is_module(root: Path, name: str) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(root: Path, module: str) -> list[tuple[int, str]]:
    """(line, module) for every import in `module`, a `from package import submodule`
    counted as the submodule; at any depth (a function's lazy import counts too)."""
    path = root.joinpath(*module.split("."))
    source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(source.read_text(), str(source))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package, or a level above it
                parts = module.split(".") if path.is_dir() else module.split(".")[:-1]
                package = parts[: len(parts) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            found.append((node.lineno, base))
            found.extend((node.lineno, f"{base}.{a.name}") for a in node.names if _is_module(root, f"{base}.{a.name}"))
    return found


def _global_random_uses(root: Path, module: str) -> list[int]:
    """Lines of `module` that use the random module's global generator (anything but random.Random)."""
    source = root.joinpath(*module.split(".")).with_suffix(".py")
    lines = []
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "random" and node.attr != "Random":
            lines.append(node.lineno)
        if isinstance(node, ast.ImportFrom) and node.module == "random" and any(a.name != "Random" for a in node.names):
            lines.append(node.lineno)
    return lines


def core_violations(root: Path, core: Mapping[str, frozenset[str]]) -> list[str]:
    """Every import of a core module under `root` that is neither the standard library it may
    use nor another core module; a package's __init__ runs with its modules, so it is held
    to the plain-data modules too."""
    projects = {p.name for p in root.iterdir() if (p / "__init__.py").is_file()}
    out: list[str] = []
    for module, extra in sorted(core.items()):
        packages = [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
        for checked, allowed, label in [*((p, frozenset[str](), f"{p} (imported with {module})") for p in packages), (module, extra, module)]:
            for line, name in _imports(root, checked):
                top = name.split(".")[0]
                if top in projects:
                    if name in core or name in packages or name == top:
                        continue
                    out.append(f"{label}, line {line}: imports {name}, a project module outside the core (an adapter)")
                elif top in PLAIN or top in allowed:
                    continue
                elif top in ADAPTER_PACKAGES:
                    out.append(f"{label}, line {line}: imports {name}, an adapter")
                else:
                    out.append(f"{label}, line {line}: imports {name}, not among the standard library modules it may use")
        if "random" in extra:
            out.extend(f"{module}, line {line}: uses the global random generator" for line in _global_random_uses(root, module))
    return out


def test_it_keeps_every_core_module_free_of_adapters() -> None:
    assert core_violations(ROOT, CORE) == []


def test_it_lists_only_core_modules_that_exist() -> None:
    assert [m for m in CORE if not _is_module(ROOT, m)] == []


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("import boto3\n", "imports boto3, an adapter"),
        ("from django.db import models\n", "imports django.db, an adapter"),
        ("from shop.store import save\n", "imports shop.store, a project module outside the core"),
        ("from shop import queue\n", "imports shop.queue, a project module outside the core"),
        ("def later():\n    import redis\n", "imports redis, an adapter"),
        ("import time\n", "imports time, not among the standard library modules it may use"),
        ("import threading\n", "imports threading, not among the standard library modules it may use"),
        ("import random\nx = random.random()\n", "uses the global random generator"),
    ],
)
def test_it_names_what_a_core_module_must_not_import(tmp_path: Path, source: str, reason: str) -> None:
    shop = tmp_path / "shop"
    shop.mkdir()
    (shop / "__init__.py").write_text('"""A shop."""\nfrom __future__ import annotations\n')
    (shop / "store.py").write_text("import boto3\n")
    (shop / "queue.py").write_text("")
    (shop / "rules.py").write_text("from shop.prices import TICK\n" + source)
    (shop / "prices.py").write_text("TICK = 1\n")
    core = {"shop.rules": frozenset({"random"}), "shop.prices": frozenset()}
    found = core_violations(tmp_path, core)
    assert len(found) == 1 and reason in found[0], found
    (shop / "rules.py").write_text("from shop.prices import TICK\n")
    assert core_violations(tmp_path, core) == []


def test_it_holds_a_core_package_init_to_the_plain_modules(tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    shop.mkdir()
    (shop / "__init__.py").write_text("from shop import store\n")
    (shop / "store.py").write_text("import boto3\n")
    (shop / "rules.py").write_text("TICK = 1\n")
    found = core_violations(tmp_path, {"shop.rules": frozenset()})
    assert found == ["shop (imported with shop.rules), line 1: imports shop.store, a project module outside the core (an adapter)"]
