#!/usr/bin/env python3
"""Checks that the crate's modules import only forward along the data flow.

Every `crate::`, `super::` and `self::` path in `src/` (code only: comments, doc comments and
`#[cfg(test)]` modules left out) is resolved to the module file it names. The check fails on

  * an import cycle between module files (a parent's `mod.rs` and its children included), and
  * an import from a top-level module listed later in ORDER than the importing one.

`src/lib.rs`, the crate root, only declares and re-exports, and is left out. Run from anywhere:
    python3 scripts/check-layers.py
"""

import os
import re
import sys

# The data flow, first to last. A module may import only from itself and those before it.
ORDER = [
    "names",     # metric names: a contract, a leaf
    "spelling",  # Prometheus spelling rules: pure functions
    "decode",    # strict percent-decoding: a pure function
    "config",    # the layer's plain settings
    "capture",   # on the caller's thread: callsites, fields, error types, ids, span state
    "handoff",   # records, per-thread rings, overload, the notable queue, re-entrancy
    "sink",      # the contract the pump writes to, and its two implementations
    "pump",      # the background drain: caps, in-flight counts, pacing
    "live",      # rolling windows and health, typed
    "layer",     # the tracing Layer that assembles the above, and its handle
    "builder",   # validated settings and the choice of sinks; builds the layer
    "http",      # the HTTP endpoints
    "telemetry", # the one-call pipeline
]

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_of(path):
    """`src/a/b.rs` -> ('a', 'b'); `src/a/mod.rs` -> ('a',); `src/lib.rs` -> ()."""
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib"):
        rel = rel[:-1]
    return tuple(rel)


def code_of(text):
    """The text without comments and without `#[cfg(test)]` items."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"(\\.|[^"\\])*"', '""', text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def paths_in(code):
    """Every path starting with crate/super/self, with `use` groups expanded one level."""
    found = []
    for m in re.finditer(r"\b(crate|super|self)((?:::\w+)+)(::\{([^;]*?)\})?", code):
        base = [m.group(1)] + m.group(2).split("::")[1:]
        if m.group(4):
            for item in re.split(r"[,\s]+", re.sub(r"\{[^}]*\}", "", m.group(4))):
                if item and item not in ("self", "*"):
                    found.append(base + [item])
        found.append(base)
    # `use super::{a, b}` / `use crate::{a, b}`
    for m in re.finditer(r"\b(crate|super|self)::\{([^;]*?)\}", code):
        for item in re.split(r"[,\s]+", re.sub(r"\{[^}]*\}", "", m.group(2))):
            if item and item not in ("self", "*"):
                found.append([m.group(1), item.split("::")[0]])
    return found


def main():
    files = {}
    for root, _, names in os.walk(SRC):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(root, name)
                files[module_of(path)] = path
    modules = set(files)

    def resolve(here, path, is_mod_rs):
        head, rest = path[0], path[1:]
        if head == "crate":
            base = ()
        elif head == "self":
            base = here
        else:  # super, possibly repeated
            base = here[:-1]
            while rest and rest[0] == "super":
                base, rest = base[:-1], rest[1:]
        # The longest prefix that is a module file.
        target = base
        for part in rest:
            if target + (part,) in modules:
                target = target + (part,)
            else:
                break
        return target

    edges = {}
    for module, path in files.items():
        if module == ():
            continue
        is_mod_rs = path.endswith("mod.rs")
        code = code_of(open(path, encoding="utf-8").read())
        targets = set()
        for p in paths_in(code):
            t = resolve(module, p, is_mod_rs)
            if t != module and t != ():
                targets.add(t)
        edges[module] = targets

    problems = []
    rank = {name: i for i, name in enumerate(ORDER)}
    for module, targets in sorted(edges.items()):
        if module[0] not in rank:
            problems.append(f"src/{'/'.join(module)}: top-level module `{module[0]}` is not in ORDER")
            continue
        for t in sorted(targets):
            if t[0] not in rank:
                problems.append(f"{'::'.join(module)} imports `{'::'.join(t)}`, not in ORDER")
            elif rank[t[0]] > rank[module[0]]:
                problems.append(
                    f"{'::'.join(module)} imports {'::'.join(t)}: `{t[0]}` comes after `{module[0]}` in the data flow"
                )

    # Cycles: Tarjan's strongly connected components.
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

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
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                sccs.append(scc)

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    for scc in sccs:
        names = ", ".join(sorted("::".join(m) for m in scc))
        problems.append(f"import cycle between: {names}")

    if problems:
        print("check-layers: the module imports do not follow the data flow:")
        for p in problems:
            print("  " + p)
        return 1
    count = sum(len(t) for t in edges.values())
    print(f"check-layers: {len(edges)} module files, {count} imports, all forward, no cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
