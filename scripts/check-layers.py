#!/usr/bin/env python3
"""The dependency rule (docs/architecture.md): a crate depends only on lower layers; L2 tiers
never on each other. And inside each crate, modules import each other one way only: no import
cycle between modules that are not nested in each other (a module and its own submodules may
refer to each other). In crates with a table in MODULE_LAYERS, a top-level module imports only
modules of its own layer or lower ones.

Reads `cargo metadata` and the crates' sources; fails (exit 1) naming every offending edge and
every cycle, printed as the modules involved and their imports among themselves.

`--graph [SRC]` prints edge's module graph instead (top-level module -> modules it imports, by
layer), from `crates/edge/src` or the source directory SRC (e.g. an older checkout's).
"""
import json
import pathlib
import re
import subprocess
import sys

# Cycles known today, being untangled: a crate's cycles must each lie inside one of these sets
# (so they may shrink or vanish, never grow or appear elsewhere). Remove an entry once gone.
KNOWN_CYCLES = {}

# A crate's top-level modules by layer: a module may import modules of its own layer (the
# cycle check above keeps those acyclic) or of lower layers, never a higher one. The crate root
# (lib.rs: the public API, and the shared state every layer is handed) is above them all.
MODULE_LAYERS = {
    "edge": {
        # 0: pure helpers and data (no connection state)
        "headers": 0, "delivery": 0, "metrics": 0, "sequencer": 0, "filtering": 0,
        "cors": 0, "app_labels": 0, "test_origin": 0, "routes_follow": 0,
        # 1: connection state and the registry (a connection, its key, its channels)
        "conn": 1, "keys": 1, "registry": 1,
        # 2: origin requests, authz, and what every hold kind shares (the registration guard,
        # usage, gone links, resumes, commands, JSON-P, the HTTP error answer)
        "origin": 2, "authz": 2, "usage": 2, "gone": 2, "hold": 2, "resume": 2,
        "commands": 2, "jsonp": 2, "error": 2,
        # 3: the hold kinds
        "http": 3, "ws": 3,
        # 4: the dispatcher (routes a request to http or ws)
        "proxy": 4,
    },
}
LAYER_NAMES = {
    "edge": ["pure helpers", "connection state", "origin, authz, shared hold parts",
             "hold kinds", "dispatcher"],
}

LAYERS = {
    "grip": 0, "routes": 0, "proto": 0,
    "runtime": 1, "bus": 1,
    "edge": 2, "control": 2, "authz": 2, "demo": 2,
    "gripmesh": 3,
    "testkit": 9,  # dev-only helpers: may use anything, nothing may depend on them at runtime
    "gripmesh-loadtest": 9,
}

# ---- import cycles inside each crate ------------------------------------------------------

def modules(src: pathlib.Path):
    mods = {}
    for f in sorted(src.rglob("*.rs")):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] in ("lib", "main") and len(parts) == 1:
            parts = []
        elif parts[-1] == "mod":
            parts = parts[:-1]
        mods["::".join(parts)] = f
    return mods

USE = re.compile(r"\b(crate|super)::(\{[^;]*?\}|[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*)", re.S)

def strip_tests(text):
    m = re.search(r"#\[cfg\(test\)\]\s*mod tests\b", text)
    text = text[: m.start()] if m else text
    text = re.sub(r"//[^\n]*", "", text)
    return text

def split_group(g):
    g = g.strip()[1:-1]
    out, depth, cur = [], 0, ""
    for ch in g:
        if ch == "{": depth += 1
        if ch == "}": depth -= 1
        if ch == "," and depth == 0:
            out.append(cur); cur = ""
        else:
            cur += ch
    out.append(cur)
    return [re.split(r"::|\s|\{", x.strip())[0] for x in out if x.strip()]

def graph(src):
    mods = modules(src)
    g = {m: set() for m in mods}
    for m, f in mods.items():
        text = strip_tests(f.read_text())
        here = m.split("::") if m else []
        for kind, path in USE.findall(text):
            base = [] if kind == "crate" else here[:-1]
            if path.startswith("{"):
                heads = [[h] for h in split_group(path)]
            else:
                heads = [path.split("::")]
            for segs in heads:
                full = base + segs
                # longest prefix that is a module
                target = None
                for i in range(len(full), -1, -1):
                    cand = "::".join(full[:i])
                    if cand in mods:
                        target = cand; break
                if target is None or target == m:
                    continue
                # parent/child edges are hierarchy, not imports between peers
                if target == "" or m.startswith(target + "::") or target.startswith(m + "::") or m == "":
                    continue
                g[m].add(target)
    return g

def sccs(g):
    index, low, on, stack, out, i = {}, {}, set(), [], [], [0]
    sys.setrecursionlimit(10000)
    def visit(v):
        index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in g:
        if v not in index:
            visit(v)
    return out



def top_graph(g):
    """Imports between top-level modules (the crate root left out)."""
    top = {}
    for m, targets in g.items():
        if not m:
            continue
        a = m.split("::")[0]
        top.setdefault(a, set())
        for t in targets:
            b = t.split("::")[0]
            if b and b != a:
                top[a].add(b)
    return top


def layer_violations(crate, g):
    table = MODULE_LAYERS.get(crate)
    if table is None:
        return []
    out = []
    for m, targets in sorted(top_graph(g).items()):
        if m not in table:
            out.append(f"{crate}: module {m} has no layer in MODULE_LAYERS (scripts/check-layers.py)")
            continue
        for t in sorted(targets):
            if t in table and table[t] > table[m]:
                out.append(f"{crate}: {m} (layer {table[m]}) imports {t} (layer {table[t]}): "
                           "modules import their own layer or lower ones only")
    return out


def print_graph(crate, src):
    table = MODULE_LAYERS[crate]
    names = LAYER_NAMES[crate]
    top = top_graph(graph(src))
    by_layer = {}
    for m in top:
        by_layer.setdefault(table.get(m, -1), []).append(m)
    print(f"{crate} module graph ({src}): module -> modules it imports (lib.rs on top)")
    for layer in sorted(by_layer, reverse=True):
        title = f"L{layer} {names[layer]}" if layer >= 0 else "no layer"
        print(title)
        for m in sorted(by_layer[layer]):
            deps = sorted(top[m], key=lambda t: (-table.get(t, -1), t))
            up = [t for t in deps if table.get(t, -1) > table.get(m, -1) >= 0]
            mark = "   <- imports upward: " + ", ".join(up) if up else ""
            print(f"  {m} -> {', '.join(deps) if deps else '(nothing)'}{mark}")
    for comp in sccs(top):
        print(f"cycle: {' <-> '.join(comp)}")


if len(sys.argv) > 1 and sys.argv[1] == "--graph":
    src = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else pathlib.Path("crates/edge/src")
    print_graph("edge", src)
    sys.exit(0)

meta = json.loads(subprocess.check_output(
    ["cargo", "metadata", "--format-version", "1", "--no-deps"]))
bad = []
for pkg in meta["packages"]:
    name = pkg["name"]
    if name not in LAYERS:
        bad.append(f"{name}: crate has no layer in scripts/check-layers.py")
        continue
    for dep in pkg["dependencies"]:
        d = dep["name"]
        if d not in LAYERS:
            continue  # external crate
        if dep.get("kind") == "dev":
            if LAYERS[d] == 9 or LAYERS[d] <= LAYERS[name]:
                continue
        if LAYERS[d] == 9:
            bad.append(f"{name} -> {d}: dev-only crate used as a normal dependency")
        elif LAYERS[d] >= LAYERS[name]:
            bad.append(f"{name} (L{LAYERS[name]}) -> {d} (L{LAYERS[d]}): must depend on lower layers only")

cycles = 0
for pkg in meta["packages"]:
    src = pathlib.Path(pkg["manifest_path"]).parent / "src"
    if not src.is_dir():
        continue
    g = graph(src)
    bad.extend(layer_violations(pkg["name"], g))
    for comp in sccs(g):
        cycles += 1
        if any(set(comp) <= known for known in KNOWN_CYCLES.get(pkg["name"], [])):
            continue
        lines = [f"  {v} -> {', '.join(sorted(x for x in g[v] if x in comp))}" for v in comp]
        bad.append(f"{pkg['name']}: import cycle between modules:\n  " + "\n  ".join(lines))

if bad:
    print("layering violations:\n  " + "\n  ".join(bad))
    sys.exit(1)
print(f"layering ok ({len(meta['packages'])} crates; {cycles} known module cycle(s) left)")
