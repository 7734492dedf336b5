"""Guards on the shape of the code (ARCHITECTURE.md): the engine never imports streamlit, project modules
import each other without cycles and only downwards, no private name crosses a module boundary, and
the lazy facades stay lazy and name only what exists.

The import graph is read from the source with `ast`, every import statement counted, module level and
inside functions alike: a function-local import still closes a cycle at run time, it only hides it
from a reader (that is how the old cycles lived on).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import ROOT

PROJECT_ROOTS = ("engine", "app", "pages")  # plus the entry script streamlit_app.py

LOWER_LAYERS = ("engine.data", "engine.metrics", "engine.models", "engine.runs")
UPPER_LAYERS = ("engine.train", "engine.evaluate", "engine.explain", "engine.predict", "engine.cli")


# --- the import graph -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. engine.models.factory; a package is its __init__ (engine.models)
    path: Path
    is_package: bool  # an __init__.py

    @property
    def rel(self) -> str:
        return self.path.relative_to(ROOT).as_posix()


@dataclass(frozen=True)
class Import:
    source: Module
    line: int
    target: str  # the project module the statement loads
    names: tuple[str, ...]  # for `from X import a, b`: the names taken from X; () for `import X`


@cache
def project_modules() -> dict[str, Module]:
    files = [p for top in PROJECT_ROOTS for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts]
    files.append(ROOT / "streamlit_app.py")
    out = {}
    for p in files:
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        out[name] = Module(name, p, is_package)
    return out


def _is_project(name: str) -> bool:
    return name.split(".")[0] in (*PROJECT_ROOTS, "streamlit_app")


def _absolute(mod: Module, module: str | None, level: int) -> str:
    """`from .x import y` (level 1) inside `mod` -> the absolute dotted name of `.x`."""
    if level == 0:
        return module or ""
    package = mod.name.split(".") if mod.is_package else mod.name.split(".")[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _resolve(name: str) -> str | None:
    """The project module `import name` loads: the name itself, or its longest prefix that is a module."""
    modules = project_modules()
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


@cache
def imports_of(name: str) -> tuple[Import, ...]:
    return imports_in(project_modules()[name])


def imports_in(mod: Module) -> tuple[Import, ...]:
    """Every project import in `mod`, at any depth (module level, functions, methods)."""
    tree = ast.parse(mod.path.read_text(), filename=str(mod.path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name) if _is_project(alias.name) else None
                if target:
                    out.append(Import(mod, node.lineno, target, ()))
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(mod, node.module, node.level)
            if not _is_project(base):
                continue
            for alias in node.names:
                # `from pkg import name`: the submodule pkg.name when there is one, else pkg's __init__
                sub = f"{base}.{alias.name}"
                target = sub if sub in project_modules() else _resolve(base)
                if target:
                    out.append(Import(mod, node.lineno, target, (alias.name,)))
    return tuple(out)


def is_lazy_facade(mod: Module) -> bool:
    """A package `__init__` whose exports go through `engine.lazy`: at import time it runs only
    `lazy_exports(...)`, and loads a defining module when a name is first *used*, after every module
    involved has finished importing. So it depends on nothing at import time and closes no cycle."""
    return mod.is_package and any(i.target == "engine.lazy" for i in imports_of(mod.name))


@cache
def graph() -> dict[str, frozenset[str]]:
    """module -> the project modules it imports (a lazy facade: none)."""
    return {
        name: frozenset() if is_lazy_facade(mod) else frozenset(i.target for i in imports_of(name))
        for name, mod in project_modules().items()
    }


def strongly_connected(g: dict[str, frozenset[str]]) -> list[frozenset[str]]:
    """Tarjan's algorithm: the groups of modules that import each other, directly or around a loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(frozenset(group))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return groups


def a_cycle(g: dict[str, frozenset[str]], group: frozenset[str]) -> list[str]:
    """One concrete loop through `group`, for the failure message: a -> b -> ... -> a."""
    start = min(group)
    path, seen = [start], {start}
    while True:
        nxt = sorted(w for w in g[path[-1]] if w in group)
        back = [w for w in nxt if w in path]
        if back:
            return path[path.index(back[0]) :] + [back[0]]
        step = next(w for w in nxt if w not in seen)
        path.append(step)
        seen.add(step)


def under(name: str, *packages: str) -> bool:
    """`name` is one of `packages` or inside one of them."""
    return any(name == p or name.startswith(p + ".") for p in packages)


def where(src: str, packages: tuple[str, ...]) -> list[str]:
    """'file:line -> target' for each import in module `src` of a module under one of `packages`."""
    return [f"{i.source.rel}:{i.line} -> {i.target}" for i in imports_of(src) if under(i.target, *packages)]


def private_names(imports: tuple[Import, ...]) -> list[tuple[Import, str]]:
    """`from X import _y` (X a project module): the leading underscore says `_y` is X's own business.
    Dunders (`__version__`) are public."""
    return [
        (i, n) for i in imports for n in i.names if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))
    ]


# --- the guards -----------------------------------------------------------------------------------


def test_the_graph_sees_function_level_imports():
    """The walk must count an import inside a function: the CLI's commands import the engine there."""
    targets = {i.target for i in imports_of("engine.cli.evaluate")}
    assert "engine.evaluate.report" in targets and "engine.runs.folder" in targets
    assert len(project_modules()) > 100


def test_engine_never_imports_streamlit():
    """Import every engine module in a fresh interpreter; streamlit must not be among sys.modules."""
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import engine\n"
        "names = [m.name for m in pkgutil.walk_packages(engine.__path__, 'engine.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "streamlit = sorted(m for m in sys.modules if m.split('.')[0] == 'streamlit')\n"
        "print(json.dumps({'imported': names, 'streamlit': streamlit}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    expected = {m for m in project_modules() if under(m, "engine") and m != "engine"}
    assert expected <= set(result["imported"]), sorted(expected - set(result["imported"]))  # every module, really
    pulled = result["streamlit"]
    assert not pulled, f"importing the engine pulled in {len(pulled)} streamlit modules, e.g. {pulled[:3]}"


def test_no_import_cycles():
    g = graph()
    cycles = strongly_connected(g)
    assert not cycles, "import cycles:\n" + "\n".join(
        f"{', '.join(sorted(c))}, e.g. {' -> '.join(a_cycle(g, c))}" for c in cycles
    )


def test_the_cycle_finder_finds_a_loop_through_a_function_level_import():
    g = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset({"a"})}
    assert strongly_connected(g) == [frozenset({"a", "b", "c"})]
    assert a_cycle(g, frozenset({"a", "b", "c"})) == ["a", "b", "c", "a"]
    assert strongly_connected({"a": frozenset({"b"}), "b": frozenset()}) == []


def test_engine_never_imports_the_app():
    bad = [line for name in graph() if under(name, "engine") for line in where(name, ("app", "pages", "streamlit_app"))]
    assert not bad, "engine imports the app:\n" + "\n".join(bad)


def test_lower_layers_never_import_upper_layers():
    """data, metrics, models and runs are used by training, evaluation, explanation, prediction and the
    CLI, never the reverse; a lazy facade's re-export does not count (it imports on use, not on import)."""
    bad = [
        line
        for name in graph()
        if under(name, *LOWER_LAYERS) and not is_lazy_facade(project_modules()[name])
        for line in where(name, UPPER_LAYERS)
    ]
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_only_the_entry_point_imports_the_cli():
    outside = [name for name in graph() if under(name, "engine") and not under(name, "engine.cli", "engine.__main__")]
    bad = [line for name in outside for line in where(name, ("engine.cli",))]
    assert not bad, "engine modules importing the CLI:\n" + "\n".join(bad)
    # inside the CLI, main imports the command groups and they import only the leaves, never main
    back = [
        line
        for name in graph()
        if under(name, "engine.cli") and name != "engine.cli.main"
        for line in where(name, ("engine.cli.main",))
    ]
    assert not back, "\n".join(back)
    leaves = [line for name in ("engine.cli.progress", "engine.cli.flags") for line in where(name, ("engine",))]
    assert not leaves, "\n".join(leaves)


def test_no_private_name_is_imported_from_another_module():
    found = [
        (i.source.rel, name, i.line, i.target)
        for mod in project_modules()
        for i, name in private_names(imports_of(mod))
    ]
    assert not found, "private names imported across modules:\n" + "\n".join(
        f"{path}:{line} imports {name} from {target}" for path, name, line, target in sorted(found)
    )


def test_the_private_name_scan_sees_relative_imports_inside_functions(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os\n\n\ndef f():\n    from .folder import _hidden, Run\n    from engine import __version__\n"
    )
    found = private_names(imports_in(Module("engine.runs.probe", probe, False)))
    assert [(i.target, i.line, name) for i, name in found] == [("engine.runs.folder", 5, "_hidden")]


# --- the lazy facades -----------------------------------------------------------------------------

FACADES = sorted(n for n, m in project_modules().items() if under(n, "engine") and is_lazy_facade(m))


@pytest.mark.parametrize("package", FACADES)
def test_every_facade_name_resolves_to_its_definition(package):
    import importlib

    facade = importlib.import_module(package)
    assert facade.__all__, package
    for name in facade.__all__:
        value = getattr(facade, name)
        home = getattr(value, "__module__", None)
        if home is not None and home.startswith("engine."):  # functions and classes name where they are defined
            assert getattr(sys.modules[home], name) is value, f"{package}.{name} is not {home}.{name}"


def test_importing_engine_and_building_the_cli_parser_load_no_torch():
    """`python -m engine --help` stays fast: the top-level API and the parser import no torch, numpy or timm."""
    code = (
        "import json, sys\n"
        "import engine\n"
        "from engine.cli.main import build_parser\n"
        "build_parser().format_help()\n"
        "print(json.dumps(sorted(m for m in ('torch', 'numpy', 'timm', 'streamlit') if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_the_top_level_api_gives_the_defining_objects():
    import engine
    from engine.config import RunConfig
    from engine.data.dataset import dataset_stats, open_dataset, quick_stats
    from engine.evaluate.report import evaluate_run
    from engine.models.factory import build_model
    from engine.predict.predictor import Predictor
    from engine.runs.folder import Run, find_run, list_runs
    from engine.train.run import run_training

    expected = {
        "run_training": run_training,
        "open_dataset": open_dataset,
        "quick_stats": quick_stats,
        "dataset_stats": dataset_stats,
        "RunConfig": RunConfig,
        "Run": Run,
        "list_runs": list_runs,
        "find_run": find_run,
        "build_model": build_model,
        "evaluate_run": evaluate_run,
        "Predictor": Predictor,
    }
    assert set(engine.__all__) == set(expected)
    for name, value in expected.items():
        assert getattr(engine, name) is value, name
    with pytest.raises(AttributeError):
        engine.no_such_name  # noqa: B018


def test_every_engine_module_imports_first_in_a_fresh_interpreter():
    """The graph above cannot see one kind of cycle: a package's `__init__` runs before any of its modules, so
    `engine.runs.folder` importing `engine.data.hierarchy` ran `engine/data/__init__.py`, whose readers import
    `engine.runs.folder` back, half-initialised (every background training job failed that way, once). Each
    engine module is imported first, with every engine module forgotten before it."""
    names = sorted(n for n in project_modules() if under(n, "engine"))
    script = (
        "import importlib, sys\n"
        "bad = []\n"
        f"for name in {names!r}:\n"
        "    for m in [m for m in sys.modules if m == 'engine' or m.startswith('engine.')]:\n"
        "        del sys.modules[m]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as e:\n"
        "        bad.append(f'{name}: {e}')\n"
        "print('\\n'.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert not out.stdout.strip(), "modules that fail when imported first:\n" + out.stdout
