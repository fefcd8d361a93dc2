#!/usr/bin/env python3
"""DESIGN.md's dependency rule: a crate depends only on lower layers; L2 tiers never on each other.

Reads `cargo metadata` and fails (exit 1) naming every offending edge.
"""
import json
import subprocess
import sys

LAYERS = {
    "grip": 0, "routes": 0, "proto": 0,
    "runtime": 1, "bus": 1,
    "edge": 2, "control": 2, "authz": 2, "demo": 2,
    "gripmesh": 3,
    "testkit": 9,  # dev-only helpers: may use anything, nothing may depend on them at runtime
    "gripmesh-loadtest": 9,
}

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
if bad:
    print("layering violations:\n  " + "\n  ".join(bad))
    sys.exit(1)
print(f"layering ok ({len(meta['packages'])} crates)")
