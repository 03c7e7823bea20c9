//! Repository automation.
//!
//! * `cargo xtask gen`: compile `compat/*.toml` into `devices/src/generated/`.
//! * `cargo xtask gen --check`: fail (naming the files) if the committed
//!   generated code is stale.
//! * `cargo xtask release X.Y[.Z]`: freeze what release X.Y presents into
//!   `compat/releases/X.Y.lock.toml` (never rewritten).
//! * `cargo xtask bench-codegen`: compile synthetic 1x/4x/16x trees and report
//!   the time of each size.

mod bench;
mod release;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn generate(check: bool) -> Result<(), String> {
    let root = root();
    let compat = root.join("compat");
    let out_dir = root.join("devices/src/generated");
    let compiled = match codegen::compile_dir(&compat)
        .map_err(|e| format!("reading {}: {e}", compat.display()))?
    {
        Ok(c) => c,
        Err(failed) => {
            for r in failed.reports() {
                eprintln!("{:?}", miette::Report::new(r));
            }
            let n = failed.diags.iter().filter(|d| d.is_error()).count();
            return Err(format!("{n} error(s) in compat/; nothing generated"));
        }
    };
    for w in &compiled.warnings {
        eprintln!(
            "{:?}",
            miette::Report::new(w.with_source(&compiled.sources))
        );
    }
    release::gen_hook(&root, &compiled, check)?;
    if check {
        let stale = codegen::output::stale(&out_dir, &compiled.files).map_err(|e| e.to_string())?;
        if !stale.is_empty() {
            let names: Vec<String> = stale
                .iter()
                .map(|s| format!("devices/src/generated/{s}"))
                .collect();
            return Err(format!(
                "stale generated files (run `cargo xtask gen`): {}",
                names.join(", ")
            ));
        }
        println!("devices/src/generated is up to date");
    } else {
        let touched =
            codegen::output::write(&out_dir, &compiled.files).map_err(|e| e.to_string())?;
        if touched.is_empty() {
            println!("devices/src/generated is up to date");
        }
        for t in touched {
            println!("wrote devices/src/generated/{t}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["gen"] => generate(false),
        ["gen", "--check"] => generate(true),
        ["bench-codegen"] => bench::run(),
        ["release", version] => release::freeze(&root(), version),
        _ => Err("usage: cargo xtask gen [--check] | cargo xtask bench-codegen | cargo xtask release X.Y[.Z]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
