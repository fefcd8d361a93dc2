//! `gripmesh`: the one binary. Parses the command line (exit 64 on bad flags or config), then
//! runs the chosen subcommand until SIGTERM/SIGINT; all of it is in the library.

/// jemalloc instead of the system allocator: a held HTTP stream or SSE connection keeps hyper's
/// two 8 KiB buffers, of which it touches a few hundred bytes, and jemalloc leaves the untouched
/// pages out of memory (15.8 → 12.1 KiB per idle stream, same CPU; BENCHMARKS.md, "Issue 20,
/// round 4").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    gripmesh::main(std::env::args_os().collect())
}
