//! `gripmesh`: the one binary. Parses the command line (exit 64 on bad flags or config), then
//! runs the chosen subcommand until SIGTERM/SIGINT; all of it is in the library.

fn main() -> std::process::ExitCode {
    gripmesh::main(std::env::args_os().collect())
}
