#!/usr/bin/env python3
"""Checks that the crate's modules import only forward along the data flow.

Every `crate::`, `super::` and `self::` path in `src/` (code only: comments, doc comments and
`#[cfg(test)]` modules left out) is resolved to the module file it names. The check fails on

  * an import cycle between module files (a parent's `mod.rs` and its children included), and
  * an import from a top-level module listed later in ORDER than the importing one.

`src/lib.rs`, the crate root, only declares and re-exports, and is left out. Run from anywhere:
    python3 scripts/check-layers.py [--edges]   (--edges: print every module's imports)
"""

import os
import re
import sys

# The data flow, first to last. A module may import only from itself and those before it.
ORDER = [
    "names",     # metric names: a contract, a leaf
    "spelling",  # Prometheus spelling rules: pure functions
    "decode",    # strict percent-decoding: a pure function
    "objectives", # objectives declared in code, and the rules and panels that measure them
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


def strip(text):
    """The text with comments, strings and char literals blanked out (lengths kept), by one
    pass that knows nested block comments, escapes, raw strings and lifetimes."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif re.match(r'b?r#*"', text[i:i + 260]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'b?r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}', '"'), else a lifetime or label ('a).
            m = re.match(r"'(\\(u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)|[^\\'])'", text[i:])
            if m:
                out.append(" " * m.end())
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def code_of(text):
    """The code without comments, strings and `#[cfg(test)]` modules."""
    text = strip(text)
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


def use_trees(code):
    """Every path a `use` declaration names, its groups expanded at every depth."""
    found = []

    def expand(prefix, tree):
        tree = tree.strip()
        if not tree:
            return
        # Split `a::b::{...}` into its head and its group.
        depth, head_end = 0, None
        for k, ch in enumerate(tree):
            if ch == "{":
                if depth == 0 and head_end is None:
                    head_end = k
                depth += 1
            elif ch == "}":
                depth -= 1
        if head_end is None:
            path = re.split(r"\s+as\s+", tree)[0].strip()
            parts = [p for p in path.split("::") if p]
            if parts and parts[-1] in ("self", "*"):
                parts = parts[:-1]
            found.append(prefix + parts)
            return
        head = [p for p in tree[:head_end].split("::") if p]
        inner = tree[head_end + 1 : tree.rindex("}")]
        items, depth, start = [], 0, 0
        for k, ch in enumerate(inner):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                items.append(inner[start:k])
                start = k + 1
        items.append(inner[start:])
        for item in items:
            expand(prefix + head, item)

    for m in re.finditer(r"\buse\s+([^;]+);", code):
        expand([], m.group(1))
    return found


def paths_in(code, children):
    """Every path that starts at `crate`, `super`, `self` or a child module of this file."""
    found = [p for p in use_trees(code) if p]
    for m in re.finditer(r"(?<![\w:])(\w+)((?:\s*::\s*\w+)+)", code):
        head = m.group(1)
        if head in ("crate", "super", "self") or head in children:
            rest = [p.strip() for p in m.group(2).split("::") if p.strip()]
            found.append([head] + rest)
    return [p if p[0] in ("crate", "super", "self") else ["self"] + p for p in found
            if p[0] in ("crate", "super", "self") or p[0] in children]


def root_exports(path, modules):
    """Names that lib.rs re-exports (`pub use a::b::X;`), mapped to the module they come from."""
    code = code_of(open(path, encoding="utf-8").read())
    exports = {}
    for m in re.finditer(r"\bpub\s+use\s+([^;]+);", code):
        for tree in use_trees("use " + m.group(1) + ";"):
            parts = [p for p in tree if p not in ("crate", "self")]
            target = ()
            for part in parts[:-1]:
                if target + (part,) in modules:
                    target = target + (part,)
                else:
                    break
            if parts:
                exports[parts[-1]] = target
    return exports


def main():
    files = {}
    for root, _, names in os.walk(SRC):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(root, name)
                files[module_of(path)] = path
    modules = set(files)

    exports = root_exports(files[()], modules)

    def resolve(here, path, is_mod_rs):
        head, rest = path[0], path[1:]
        # `self` in a file is that module; `super` its parent (for a mod.rs too: the file is
        # the folder's module).
        if head == "crate":
            base = ()
            if rest and rest[0] in exports and (rest[0],) not in modules:
                return exports[rest[0]]
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
        children = {m[-1] for m in modules if len(m) == len(module) + 1 and m[: len(module)] == module}
        targets = set()
        for p in paths_in(code, children):
            t = resolve(module, p, is_mod_rs)
            if t != module and t != ():
                targets.add(t)
        edges[module] = targets

    if "--edges" in sys.argv:
        for module, targets in sorted(edges.items()):
            print("::".join(module), "->", ", ".join(sorted("::".join(t) for t in targets)))
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
