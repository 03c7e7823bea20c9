//! Text and JSON forms of the matrix. The text uses the seed document's own
//! notation: `vmm-8.0 -M pc-7.2 -> vmm-7.2 -M pc-7.2`.

use super::{Cell, MatrixError};
use compat_runtime::release::Verdict;
use std::fmt::Write;

/// One line per cell (plus an indented line per difference and fix), one
/// block per machine type, and a count at the end.
pub fn text(cells: &[Cell]) -> String {
    let mut o = String::new();
    let (mut works, mut fails, mut impossible) = (0, 0, 0);
    let mut machine: Option<&str> = None;
    for c in cells {
        if machine != Some(c.machine.as_str()) {
            if machine.is_some() {
                o.push('\n');
            }
            let _ = writeln!(o, "== {}", c.machine);
            machine = Some(&c.machine);
        }
        let _ = write!(
            o,
            "vmm-{} -M {m} -> vmm-{} -M {m}: ",
            c.source,
            c.destination,
            m = c.machine
        );
        match &c.verdict {
            Verdict::Works => {
                works += 1;
                o.push_str("works\n");
            }
            Verdict::NotPossible { release, machine } => {
                impossible += 1;
                let _ = writeln!(o, "not possible: {release} does not know {machine}");
            }
            Verdict::Fails { differences, fix } => {
                fails += 1;
                o.push_str("fails\n");
                for d in differences {
                    let _ = writeln!(o, "    differs: {d}");
                }
                if !fix.is_empty() {
                    let _ = writeln!(
                        o,
                        "    works if the destination is started with {} (or adopts the stream's configuration)",
                        fix.join(" ")
                    );
                }
            }
        }
    }
    let _ = writeln!(
        o,
        "\n{} migrations: {works} work, {fails} fail, {impossible} not possible",
        cells.len()
    );
    o
}

/// `{"cells": [...]}`, pretty-printed.
pub fn json(cells: &[Cell]) -> Result<String, MatrixError> {
    #[derive(serde::Serialize)]
    struct Out<'a> {
        cells: &'a [Cell],
    }
    let mut s = serde_json::to_string_pretty(&Out { cells })?;
    s.push('\n');
    Ok(s)
}
