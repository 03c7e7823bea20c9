//! `vmm`'s side of `bench-migrate`: a source `vmm run` and a destination
//! `vmm run --incoming defer` (it learns channels and compression from the
//! stream), each with a QMP socket, migrated by `drive::migrate`, the same
//! QMP code that migrates the reference.

use super::drive::{self, RunError};
use super::setting::Setting;
use super::{Case, READY, Sample};
use crate::bench_vmm::{Proc, vmm_run};
use std::path::Path;
use std::process::Command;

/// One side: `vmm run` of `case` (or a bare destination) with its QMP
/// socket at `qmp`.
fn vmm_cmd(vmm: &Path, case: &Case, qmp: &Path, destination: bool) -> Command {
    let mut c = if destination {
        let mut c = Command::new(vmm);
        c.args(["run", "--incoming", "defer"]);
        c
    } else {
        vmm_run(vmm, case.kernel, case.mib, case.workload)
    };
    c.arg("--qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()));
    c
}

/// One `vmm` → `vmm` migration.
pub fn run_vmm(vmm: &Path, set: &Setting, case: &Case) -> Result<Sample, RunError> {
    let sq = case.scratch("vmm-src.qmp");
    let dq = case.scratch("vmm-dst.qmp");
    let _ = std::fs::remove_file(&sq);
    let _ = std::fs::remove_file(&dq);
    let src = Proc::spawn(vmm_cmd(vmm, case, &sq, false))?;
    src.wait_line(READY, case.ready_line())?;
    let dst = Proc::spawn(vmm_cmd(vmm, case, &dq, true))?;
    let r =
        drive::migrate((&src, &sq), (&dst, &dq), set, case, drive::Kind::Vmm).map_err(
            |e| match e {
                RunError::Failed(why) => RunError::Failed(format!(
                    "{why}\nsource: {}\ndestination: {}",
                    src.stderr(),
                    dst.stderr()
                )),
                other => other,
            },
        );
    let _ = std::fs::remove_file(&sq);
    let _ = std::fs::remove_file(&dq);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_have_a_qmp_socket_and_the_destination_defers() {
        super::super::with_test_case(|case| {
            let line = |c: &Command| crate::bench_vmm::tests::line(c);
            assert_eq!(
                line(&vmm_cmd(Path::new("vmm"), case, Path::new("/t/s"), false)),
                "vmm run -m 256M --kernel g.elf --append workload=ab --qmp unix:/t/s,server=on,wait=off"
            );
            assert_eq!(
                line(&vmm_cmd(Path::new("vmm"), case, Path::new("/t/d"), true)),
                "vmm run --incoming defer --qmp unix:/t/d,server=on,wait=off"
            );
        });
    }
}
