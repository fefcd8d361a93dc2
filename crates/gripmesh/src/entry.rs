//! From the command line to an exit code: the flags (exit 64 on bad flags or config), the async
//! runtime, then the chosen subcommand until SIGTERM/SIGINT.

use crate::{cli, common, ctl, demo, tiers};
use std::ffi::OsString;
use std::process::ExitCode;

/// `EX_USAGE`: bad flags or configuration.
const EXIT_CONFIG: u8 = 64;

/// Runs the binary on `args` (the program name first) and returns its exit code.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let args = match crate::config_file::merged_args(args) {
        Ok(args) => args,
        Err(msg) => return fail(&msg),
    };
    let cli = match <cli::Cli as clap::Parser>::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => return parse_failure(&err),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("gripmesh: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        cli::Command::Standalone(args) => runtime.block_on(tiers::standalone(*args)),
        cli::Command::Edge(args) => runtime.block_on(tiers::edge(*args)),
        cli::Command::Control(args) => runtime.block_on(tiers::control(args)),
        cli::Command::Authz(args) => runtime.block_on(tiers::authz(args)),
        cli::Command::Demo(args) => runtime.block_on(demo::demo(args)),
        cli::Command::Publish(args) => runtime.block_on(ctl::publish(args)),
        cli::Command::Routes(args) => runtime.block_on(ctl::routes(args)),
        cli::Command::Status(args) => runtime.block_on(ctl::status(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(common::Fatal::Config(msg)) => fail(&msg),
        Err(common::Fatal::Runtime(msg)) => {
            eprintln!("gripmesh: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Help and version exit 0; help shown for a missing subcommand, and any other refusal, 64.
fn parse_failure(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = err.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            ExitCode::from(EXIT_CONFIG)
        }
        _ => {
            // One line: clap's first paragraph (e.g. "required arguments were not
            // provided: --nats <NATS>"), without the usage text.
            let text = err.to_string();
            let first: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            fail(&first.join(" "))
        }
    }
}

fn fail(msg: &str) -> ExitCode {
    let msg = msg.strip_prefix("error: ").unwrap_or(msg);
    eprintln!("gripmesh: {msg}");
    ExitCode::from(EXIT_CONFIG)
}
