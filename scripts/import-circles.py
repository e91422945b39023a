#!/usr/bin/env python3
"""Import circles between the crate's modules (one module per file), from its `crate::`,
`super::` and `self::` paths (in `use` lines and inline), test modules left out.

    scripts/import-circles.py            # circles between files, then between top-level modules
    scripts/import-circles.py --edges    # also every edge, for a picture of the structure

A module naming its own children (`mod child; pub use child::Type`, a module map) is the module
tree, not a dependency, so those edges are left out; a child using its parent's items is kept.
A path through such a re-export (`crate::store::SqliteStore`, `crate::config::Config` from
`pub use model::*`) counts as an edge to the child that defines the item, so a circle inside a
top-level module is not hidden behind its `mod.rs`.
Exit status 1 when a circle is found (between files, or between top-level modules).
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


def use_trees(text, only_pub=False):
    """The trees of `use` items, whitespace removed, `x as y` written `x@y`."""
    pattern = r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);" if only_pub else r"\buse\s+([^;]+);"
    for m in re.finditer(pattern, text):
        yield re.sub(r"\s+", "", re.sub(r"\s+as\s+", "@", m.group(1)))


def expand_uses(text):
    """`use a::{b, c::{d}}` -> paths a::b, a::c::d; plus inline `crate::x::y` paths."""
    paths = []
    for tree in use_trees(text):
        paths.extend(p.split("@")[0] for p in expand(tree))
    for m in re.finditer(r"(?<![\w:])((?:crate|super|self)(?:::\w+)+)", text):
        paths.append(m.group(1))
    return paths


def public_names(text):
    """Names a file makes public: its items and its (non-glob) re-exports."""
    names = set(
        re.findall(
            r"\bpub(?:\([^)]*\))?\s+(?:async\s+|unsafe\s+|const\s+)*"
            r"(?:struct|enum|union|fn|type|const|static|trait|mod)\s+(\w+)",
            text,
        )
    )
    for tree in use_trees(text, only_pub=True):
        for p in expand(tree):
            name = p.split("@")[-1].split("::")[-1]
            if name != "*":
                names.add(name)
    return names


def reexports(texts, modules):
    """Per module, the items it re-exports from its own descendants (`pub use child::T`,
    `pub use child::*`): {module: ({name: child}, [glob children])}."""
    out = {}
    for mod, text in texts.items():
        named, globs = {}, []
        for tree in use_trees(text, only_pub=True):
            for p in expand(tree):
                path, _, alias = p.partition("@")
                target = resolve(path, mod, modules)
                if target is None or len(target) <= len(mod) or target[: len(mod)] != mod:
                    continue
                name = alias or path.split("::")[-1]
                if name == "*":
                    globs.append(target)
                elif name != "self":
                    named[name] = target
        if named or globs:
            out[mod] = (named, globs)
    return out


def expand(tree):
    i = tree.find("{")
    if i < 0:
        return [tree]
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


def resolve(path, here, modules, reexported=None, names=None):
    """The module `path` (as written in `here`) names; with `reexported`, a re-exported item
    is followed to the descendant module that defines it."""
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
    cur, rest = base, list(segs)
    while rest and cur + (rest[0],) in modules:
        cur = cur + (rest.pop(0),)
        best = cur
    # `crate::store::SqliteStore` is store::sqlite's item, re-exported by store's module map.
    for _ in range(8):
        if not (reexported and best in reexported and rest):
            break
        named, globs = reexported[best]
        target = named.get(rest[0])
        if target is None:
            target = next((g for g in globs if rest[0] in names.get(g, ())), None)
        if target is None:
            break
        best, rest = target, rest[1:]
        while rest and best + (rest[0],) in modules:
            best = best + (rest.pop(0),)
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
                # The binary is its own crate (`crate::` means its main.rs there): it uses
                # the library and nothing uses it.
                if os.path.relpath(p, SRC).startswith("bin" + os.sep):
                    continue
                files[module_of(p)] = p
    modules = set(files)
    texts = {mod: strip_tests(open(p, encoding="utf-8").read()) for mod, p in files.items()}
    reexported = reexports(texts, modules)
    names = {mod: public_names(text) for mod, text in texts.items()}
    edges = {}
    for mod, text in texts.items():
        for path in expand_uses(text):
            target = resolve(path, mod, modules, reexported, names)
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
