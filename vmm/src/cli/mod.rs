//! The subcommands of the `vmm` binary (the top layer: nothing below imports it).

pub mod ctl;
pub mod demo;
pub mod dump_vmstate;
pub mod introspect;
pub mod logger;
pub mod run;

use std::process::ExitCode;

/// Ends a subcommand: exit 0, or the error as a one-line miette diagnostic
/// on stderr (scripts and tests grep these) and exit 1.
pub fn exit_with(r: miette::Result<()>) -> ExitCode {
    let _ = miette::set_hook(Box::new(|_| {
        Box::new(miette::MietteHandlerOpts::new().wrap_lines(false).build())
    }));
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:?}");
            ExitCode::FAILURE
        }
    }
}
