#!/usr/bin/env python3
"""Import circles between the crate's modules (one module per file), from its `crate::`,
`super::` and `self::` paths (in `use` lines and inline), test modules left out.

    scripts/import-circles.py            # circles between files, then between top-level modules
    scripts/import-circles.py --edges    # also every edge, for a picture of the structure

A module naming its own children (`mod child; pub use child::Type`, a module map) is the module
tree, not a dependency, so those edges are left out; a child using its parent's items is kept.
Exit status 1 when a circle is found.
"""

import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip_tests(text):
    """Drops `#[cfg(test)] mod x { ... }` blocks and comments."""
    text = re.sub(r"//[^\n]*", "", text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(#\[[^\]]*\]\s*)*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text):
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


def expand_uses(text):
    """`use a::{b, c::{d}}` -> paths a::b, a::c::d; plus inline `crate::x::y` paths."""
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        paths.extend(expand(m.group(1).replace(" ", "").replace("\n", "")))
    for m in re.finditer(r"(?<![\w:])((?:crate|super|self)(?:::\w+)+)", text):
        paths.append(m.group(1))
    return paths


def expand(tree):
    i = tree.find("{")
    if i < 0:
        return [re.sub(r"as\w+$", "", tree)]
    prefix, inner = tree[:i], tree[i + 1 : tree.rfind("}")]
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur += ch
    items.append(cur)
    out = []
    for it in items:
        if it:
            out.extend(expand(prefix + it))
    return out


def resolve(path, here, modules):
    segs = path.split("::")
    if segs[0] == "crate":
        base, segs = (), segs[1:]
    elif segs[0] == "self":
        base, segs = here, segs[1:]
    elif segs[0] == "super":
        base, segs = here, segs
        while segs and segs[0] == "super":
            base, segs = base[:-1], segs[1:]
    elif here + (segs[0],) in modules:
        # A child module named without `self::` (`pub use client::Session`).
        base = here
    else:
        return None
    best = base if base in modules else None
    cur = base
    for s in segs:
        cur = cur + (s,)
        if cur in modules:
            best = cur
        else:
            break
    return best


def sccs(nodes, edges):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main():
    files = {}
    for root, _, names in os.walk(SRC):
        for name in names:
            if name.endswith(".rs"):
                p = os.path.join(root, name)
                if name == "tests.rs" or os.sep + "tests" + os.sep in p:
                    continue
                files[module_of(p)] = p
    modules = set(files)
    edges = {}
    for mod, p in files.items():
        text = strip_tests(open(p, encoding="utf-8").read())
        for path in expand_uses(text):
            target = resolve(path, mod, modules)
            # A module naming its own children (`mod x; pub use x::T`) is the module tree,
            # not a dependency.
            if target is not None and target[: len(mod)] != mod:
                edges.setdefault(mod, set()).add(target)
    name = lambda m: "::".join(m) or "crate"
    if "--edges" in sys.argv:
        for m in sorted(edges):
            print(f"{name(m)} -> {', '.join(sorted(name(t) for t in edges[m]))}")
    bad = 0
    for comp in sccs(modules, edges):
        pairs = [(a, b) for a in comp for b in edges.get(a, ()) if b in comp]
        parent_child = all(a[:-1] == b or b[:-1] == a for a, b in pairs)
        kind = "parent/child" if parent_child else "CIRCLE"
        bad += kind == "CIRCLE"
        print(f"{kind}: " + " <-> ".join(name(m) for m in comp))
        for a, b in sorted(pairs):
            print(f"    {name(a)} -> {name(b)}")
    top, witness = {}, {}
    for a, ts in edges.items():
        for b in ts:
            if a[:1] != b[:1] and a[:1] and b[:1]:
                top.setdefault(a[:1], set()).add(b[:1])
                witness.setdefault((a[:1], b[:1]), []).append(f"{name(a)} -> {name(b)}")
    for comp in sccs({m[:1] for m in modules if m}, top):
        bad += 1
        print("CIRCLE between top-level modules: " + " <-> ".join(name(m) for m in comp))
        for a in comp:
            for b in sorted(top.get(a, ())):
                if b in comp:
                    seen = sorted(witness[(a, b)])
                    more = f" (+{len(seen) - 3} more)" if len(seen) > 3 else ""
                    print(f"    {name(a)} -> {name(b)}: {'; '.join(seen[:3])}{more}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
