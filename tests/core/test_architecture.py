"""The package's architecture, checked rather than hoped for (docs/design.md, "Layers").

- The import-linter contracts in ``pyproject.toml`` hold: layers point down only, nothing but the
  CLI imports ``calibadv.cli``/``calibadv.commands``, the DAG's parse path never imports torch.
  import-linter sees imports inside functions too, so a lazy import cannot hide an upward edge.
- No import cycle among calibadv's modules (lazy imports included).
- What Snakemake imports to parse the DAG pulls in no heavy package at module level, however
  indirectly (a static complement of tests/workflow/test_parse_imports.py).
- docs/design.md draws the same layers as the contract.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "calibadv"
#: Packages whose import costs seconds (or is GPU-only): never at module level where the DAG parses.
HEAVY = {"torch", "transformers", "numpy", "pandas", "faiss", "sentence_transformers", "vllm",
         "verl", "ray", "matplotlib", "seaborn", "scipy", "sklearn"}


def dag_entry_modules() -> list[str]:
    """The calibadv modules the Snakefile and rules/*.smk import: the DAG's parse path."""
    found = set()
    for path in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]:
        text = path.read_text(encoding="utf-8")
        found |= set(re.findall(r"^\s*from (calibadv[\w.]*) import", text, re.M))
        found |= set(re.findall(r"^\s*import (calibadv[\w.]*)", text, re.M))
    return sorted(found)


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _layers_contract() -> dict:
    (layers,) = [c for c in _contracts() if c["type"] == "layers"]
    return layers


def test_import_linter_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    result = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    kept = re.search(r"Contracts: (\d+) kept, (\d+) broken", result.stdout)
    assert kept and int(kept.group(1)) == len(_contracts()) and kept.group(2) == "0", result.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle_and_only_cycles():
    graph = grimp.ImportGraph()
    for name in ("p", "p.a", "p.b", "p.c", "p.d"):
        graph.add_module(name)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.c")
    graph.add_import(importer="p.c", imported="p.a")
    graph.add_import(importer="p.d", imported="p.a")
    assert _cycles(graph) == [["p.a", "p.b", "p.c"]]


def test_no_import_cycle_among_calibadv_modules():
    graph = grimp.build_graph("calibadv")  # imports inside functions count
    cycles = _cycles(graph)
    assert not cycles, "import cycles (lazy imports included): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def _module_level_imports(path: Path, module: str) -> set[str]:
    """Absolute names imported at module level (``if TYPE_CHECKING:`` blocks excluded)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            out.add(name)
            out.update(f"{name}.{alias.name}" for alias in node.names)
    return out


def _module_file(module: str) -> Path | None:
    rel = Path(*module.split("."))
    for candidate in (ROOT / rel.with_suffix(".py"), ROOT / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_the_dag_parse_path_imports_no_heavy_package_at_module_level():
    seen: dict[str, str | None] = {}  # module -> the module that imported it
    entries = dag_entry_modules()
    assert len(entries) >= 3, entries
    todo: list[tuple[str, str | None]] = [(m, None) for m in entries]
    heavy: list[str] = []
    while todo:
        module, parent = todo.pop()
        if module in seen:
            continue
        seen[module] = parent
        parts = module.split(".")
        # importing calibadv.a.b runs calibadv/__init__ and calibadv/a/__init__ first
        todo += [(".".join(parts[:i]), module) for i in range(1, len(parts)) if parts[0] == "calibadv"]
        path = _module_file(module)
        if path is None:
            continue
        for name in _module_level_imports(path, module):
            top = name.split(".")[0]
            if top in HEAVY:
                chain, at = [module], seen[module]
                while at:
                    chain.append(at)
                    at = seen[at]
                heavy.append(f"{name} via {' <- '.join(chain)}")
            elif top == "calibadv":
                todo.append((name, module))
    assert not heavy, "the DAG's parse path imports heavy packages at module level: " + "; ".join(heavy)
    followed = {"calibadv.errors", "calibadv.spec", "calibadv.workflow.validation"}
    assert followed <= set(seen), f"the parse path was not followed: {sorted(seen)}"


def test_design_doc_draws_the_contracts_layers():
    contract = _layers_contract()
    (container,) = contract["containers"]
    doc = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- layers:begin -->\n```\n(.*?)```\n<!-- layers:end -->", doc, re.S)
    assert block, "docs/design.md has no layers block between <!-- layers:begin/end --> markers"
    drawn = [line for line in block.group(1).splitlines() if line.strip() and not line.startswith(" ")]
    names_per_row = [sorted(re.findall(r"[a-z_]+", row.split("#")[0])) for row in drawn]
    expected = [sorted(re.findall(r"[a-z_]+", layer)) for layer in contract["layers"]]
    assert names_per_row == expected, (
        f"docs/design.md's layers differ from pyproject.toml's contract for {container}:\n"
        f"doc:      {names_per_row}\ncontract: {expected}")


def test_every_top_level_module_is_in_a_layer():
    contract = _layers_contract()
    listed = {name for layer in contract["layers"] for name in re.findall(r"[a-z_]+", layer)}
    present = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    present |= {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert present == listed, f"not in a layer: {sorted(present - listed)}; gone: {sorted(listed - present)}"
