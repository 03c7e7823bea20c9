//! The subcommands of the `vmm` binary (the top layer: nothing below imports it).

pub mod cpu;
pub mod ctl;
pub mod demo;
pub mod dump_vmstate;
pub mod introspect;
pub mod logger;
pub mod run;
pub mod session;
pub mod storage;
pub mod tls;

use std::process::ExitCode;

/// Runs a subcommand: exit 0, or its error as a one-line miette diagnostic
/// on stderr (scripts and tests grep these) and exit 1 (2 for bad input). The hook is set
/// before `f` runs: a report takes its handler when it is made.
pub fn exit_with(f: impl FnOnce() -> miette::Result<()>) -> ExitCode {
    let _ = miette::set_hook(Box::new(|_| {
        Box::new(miette::MietteHandlerOpts::new().wrap_lines(false).build())
    }));
    match f() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:?}");
            let code = e
                .downcast_ref::<run::RunError>()
                .map_or(1, run::RunError::exit_code);
            ExitCode::from(code)
        }
    }
}
