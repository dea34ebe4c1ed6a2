"""The package's layers point one way, and no module imports itself round a circle.

ground (config, errors, atomic, audio_io, args, machine, paths, shipped, overlay) <- kernels <- model
<- train <- runtime <- export <- live <- profile <- cli: a module imports only its own layer and
those to its left. The Triton kernels (`jsa_rt/kernels/`) sit just below the model, whose fast
path they are: they know nothing of it, and the ground floor knows nothing of them. The runtime
(backends, reading engines) sits below export because building an engine ends with running it
against onnxruntime; the live path never needs export. Every import in
`jsa_rt/` counts, the lazy ones inside functions too: a lazy import still ties two layers.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "jsa_rt"
LAYERS = ["ground", "kernels", "model", "train", "runtime", "export", "live", "profile", "cli"]
GROUND = {"config", "errors", "atomic", "audio_io", "args", "machine", "paths", "shipped", "overlay", "weights"}
# Imports that still point up, each with its reason; a new one fails the test.
KNOWN_UPWARD = {
    # onnx_for(None, preset): random weights exported on demand (tests, timing), never on the live path
    ("jsa_rt.runtime", "jsa_rt.export.onnx_export"),
    # the package's face: `jsa_rt.SoundLocator`, imported lazily
    ("jsa_rt", "jsa_rt.live.locator"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def known_modules() -> set[str]:
    return {module_name(p) for p in PACKAGE.rglob("*.py")}


def imports() -> dict[str, set[str]]:
    """module -> the jsa_rt modules it imports (`from x import name` counts `x.name` if a module)."""
    modules, edges = known_modules(), defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    edges[name].add(full if full in modules else target)
            elif isinstance(node, ast.Import):
                edges[name].update(a.name for a in node.names)
    return {m: {t for t in ts if t.startswith("jsa_rt") and t != m} for m, ts in edges.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return LAYERS.index("ground")              # jsa_rt itself: __version__
    if parts[1] == "cli":
        return LAYERS.index("cli")
    return LAYERS.index("ground") if parts[1] in GROUND else LAYERS.index(parts[1])


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))
    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def test_every_package_is_placed_in_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    files = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert packages | files <= set(LAYERS) | GROUND, (packages | files) - set(LAYERS) - GROUND


def test_no_module_imports_a_layer_above_its_own():
    edges = imports()
    upward = sorted((m, t) for m, ts in edges.items() for t in ts if layer(t) > layer(m))
    new = [(m, t) for m, t in upward if (m, t) not in KNOWN_UPWARD]
    assert not new, "imports that point up a layer: " + "; ".join(f"{m} -> {t}" for m, t in new)


def test_no_import_cycles():
    found = cycles(imports())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_package_does_not_reach_the_kernel_experiments():
    """kernels/experiments/ (repository root) is off the import path: no module imports it or
    names it in code (docstrings may say where the experiments are)."""
    users = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(n)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                names = [node.value]
            else:
                continue
            users += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}" for n in names if "experiments" in n]
    assert not users, f"the package reaches into kernels/experiments/: {users}"


def test_the_checks_see_a_cycle_and_an_upward_import():
    """The detectors themselves: a made-up graph with one of each."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer("jsa_rt.export.tensorrt_build") > layer("jsa_rt.runtime.trt_backend") > layer("jsa_rt.model.jsa")
    assert layer("jsa_rt.model.jsa") > layer("jsa_rt.kernels.joint_loop") > layer("jsa_rt.errors")
    assert layer("jsa_rt.config") == layer("jsa_rt") == 0 and layer("jsa_rt.cli") == len(LAYERS) - 1
