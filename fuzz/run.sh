#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) each, one after another, and prints one
# summary line per target: executions, coverage, corpus size, crashes.
#
#   fuzz/run.sh [SECONDS]
#
# Environment:
#   FUZZ_TARGETS="a b"   only these targets (default: all, from `cargo fuzz list`)
#   FUZZ_SANITIZER=none  build without AddressSanitizer (default: address; falls back to none
#                        by itself if the ASan build fails)
#
# Only stable Rust is installed: RUSTC_BOOTSTRAP=1 lets it accept the nightly-only flags
# cargo-fuzz passes (-Zsanitizer, sancov passes). Seeds are copied from fuzz/seeds/<target>/
# (committed) into fuzz/corpus/<target>/ (generated, git-ignored), which grows across runs.
# Crashing inputs land in fuzz/artifacts/<target>/; reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/crash-…
# Exit status: 0 when no target crashed, 1 otherwise.
set -uo pipefail

secs="${1:-600}"
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz" >&2; exit 2; }

sanitizer="${FUZZ_SANITIZER:-address}"
if ! cargo fuzz build --sanitizer "$sanitizer" >/dev/null 2>target-build.log; then
    if [ "$sanitizer" != none ]; then
        echo "build with --sanitizer $sanitizer failed (see fuzz/target-build.log); retrying without" >&2
        sanitizer=none
        cargo fuzz build --sanitizer none >/dev/null 2>target-build.log \
            || { cat target-build.log >&2; exit 2; }
    else
        cat target-build.log >&2; exit 2
    fi
fi
rm -f target-build.log

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
mkdir -p logs
summary=()
failed=0
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t"
    if [ -d "seeds/$t" ]; then cp -n "seeds/$t"/* "corpus/$t/" 2>/dev/null || true; fi
    dict=()
    case "$t" in
        instruct_json|publish_json|wscontrol) dict=(-dict=dicts/json.dict) ;;
        *) [ -f "dicts/$t.dict" ] && dict=(-dict="dicts/$t.dict") ;;
    esac
    before=$(ls "artifacts/$t" | wc -l)
    log="logs/$t.log"
    echo "== $t: ${secs}s (sanitizer: $sanitizer)" >&2
    cargo fuzz run --sanitizer "$sanitizer" "$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        "${dict[@]}" >"$log" 2>&1
    status=$?
    after=$(ls "artifacts/$t" | wc -l)
    crashes=$((after - before))
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
    # The last status line (`#N DONE cov: C ft: F corp: K/...`, or the last progress line).
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    [ -z "$runs" ] && runs=$(sed -E 's/^#([0-9]+).*/\1/' <<<"$last")
    cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*')
    ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*')
    corp=$(grep -o 'corp: [0-9]*' <<<"$last" | grep -o '[0-9]*')
    if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes="?(exit $status)"; fi
    line="$t: runs=${runs:-?} cov=${cov:-?} ft=${ft:-?} corpus=${corp:-?} crashes=$crashes"
    if [ "$status" -ne 0 ]; then
        failed=1
        line="$line  <- see fuzz/$log and fuzz/artifacts/$t/"
    fi
    echo "$line" >&2
    summary+=("$line")
done
echo "---- fuzz summary (${secs}s per target, sanitizer: $sanitizer)"
printf '%s\n' "${summary[@]}"
exit "$failed"
