#!/usr/bin/env python3
"""The code's shape in figures: import cycles (function-local imports count),
imports that cross a layer the wrong way, and modules over 400 lines.

    python bench/shape.py

Layers, lowest first: ``stp`` (pure), ``handlers`` (may import stp),
``adapters`` (may import stp), ``app`` (may import all of them); ``fixsim``
may import stp only, and nothing in production imports it.  Packages that
do not exist yet are left out.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {
    "stp": {"stp"},
    "handlers": {"handlers", "stp"},
    "adapters": {"adapters", "stp"},
    "app": {"app", "adapters", "handlers", "stp"},
    "fixsim": {"fixsim", "stp"},
}


def cycles(adjacency: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(adjacency):
        if root in index:
            continue
        work = [(root, iter(sorted(adjacency[root])))]
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
                    work.append((child, iter(sorted(adjacency.get(child, ())))))
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


def main() -> int:
    sys.path.insert(0, str(ROOT))
    packages = [p for p in ALLOWED if (ROOT / p / "__init__.py").exists() or (ROOT / p).is_dir()]
    graph = grimp.build_graph(*packages, include_external_packages=False)
    adjacency = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    wrong = sorted((a, b) for a, targets in adjacency.items() for b in targets
                   if b.split(".")[0] not in ALLOWED[a.split(".")[0]])
    found = cycles(adjacency)
    print(f"import cycles: {len(found)}")
    for component in found:
        print("  " + " <-> ".join(component))
    print(f"imports crossing a layer the wrong way: {len(wrong)}")
    for a, b in wrong:
        print(f"  {a} -> {b}")
    big = sorted(((len(p.read_text().splitlines()), p.relative_to(ROOT).as_posix())
                  for pkg in packages for p in (ROOT / pkg).rglob("*.py")
                  if "migrations" not in p.parts), reverse=True)
    big = [(n, p) for n, p in big if n > 400]
    print(f"modules over 400 lines: {len(big)}")
    for n, p in big:
        print(f"  {n:5d} {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
