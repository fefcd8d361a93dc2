#!/usr/bin/env python3
"""No unused dependencies: every dependency a crate declares is named in its code.

For each workspace member's Cargo.toml, a `[dependencies]` entry must be named in `src/` (or
`build.rs`), a `[build-dependencies]` entry in `build.rs`, a `[dev-dependencies]` entry in
`src/`, `tests/`, `benches/` or `examples/` (e2e tests declared with `[[test]] path` count as
the crate's tests). "Named" means the crate's Rust name followed by `::` or used in a `use`,
`extern crate` or attribute. A cheap grep (no build), in the spirit of cargo-machete; the few
dependencies only generated code or a macro names are listed in IGNORED with the reason.

Exit 1 naming every unused dependency.
"""
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent

# (crate, dependency) pairs no source file names, with why they are needed.
IGNORED = {
    # tonic's generated code (OUT_DIR) calls tonic_prost's codec.
    ("proto", "tonic-prost"),
    # prost's generated message code (OUT_DIR) derives prost::Message.
    ("proto", "prost"),
}


def rust_name(dep: str) -> str:
    # The key (not a renamed `package`) is the name code uses.
    return dep.replace("-", "_")


def sources(dirs):
    for d in dirs:
        if d.is_file():
            yield d
        elif d.is_dir():
            yield from d.rglob("*.rs")


def named(name: str, files) -> bool:
    pat = re.compile(
        rf"(?<![A-Za-z0-9_]){re.escape(name)}::|\buse\s+{re.escape(name)}\b|"
        rf"\bextern\s+crate\s+{re.escape(name)}\b|#\[{re.escape(name)}\b|"
        rf"\bpub\s+use\s+{re.escape(name)}\b"
    )
    for f in files:
        if pat.search(f.read_text(encoding="utf-8", errors="replace")):
            return True
    return False


def members():
    ws = tomllib.loads((ROOT / "Cargo.toml").read_text())
    for pattern in ws["workspace"]["members"]:
        for d in sorted(ROOT.glob(pattern)):
            if (d / "Cargo.toml").is_file():
                yield d


bad = []
count = 0
for crate_dir in members():
    manifest = tomllib.loads((crate_dir / "Cargo.toml").read_text())
    crate = manifest["package"]["name"]
    test_paths = [crate_dir / t["path"] for t in manifest.get("test", []) if "path" in t]
    test_dirs = [p.parent if p.name == "main.rs" else p for p in test_paths]
    kinds = {
        "dependencies": [crate_dir / "src", crate_dir / "build.rs"],
        "build-dependencies": [crate_dir / "build.rs"],
        "dev-dependencies": [
            crate_dir / "src",
            crate_dir / "tests",
            crate_dir / "benches",
            crate_dir / "examples",
            *test_dirs,
        ],
    }
    for kind, dirs in kinds.items():
        files = list(sources(dirs))
        for dep in manifest.get(kind, {}):
            count += 1
            if (crate, dep) in IGNORED:
                continue
            if not named(rust_name(dep), files):
                bad.append(f"{crate}: [{kind}] {dep} is not used")
if bad:
    print("unused dependencies:\n  " + "\n  ".join(bad))
    sys.exit(1)
print(f"dependencies ok ({count} declared, all used)")
