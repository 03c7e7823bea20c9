//! The reference VMM's side of `bench-migrate`: two QEMU processes (the
//! destination `-incoming defer`) with QMP sockets, migrated by
//! `drive::migrate`, the same QMP code that migrates `vmm`.

use super::drive::{self, RunError};
use super::setting::{Setting, Version};
use super::{Case, READY, Sample};
use crate::bench_vmm::{Proc, reference_qemu};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One side of `case`: the reference VMM with its QMP socket at `qmp`, its
/// threads named (`CPU N/KVM`) so that vCPU time can be told apart.
fn qemu_cmd(qemu: &Path, case: &Case, qmp: &Path, name: &str) -> Command {
    let extra = [
        "-name".to_string(),
        format!("{name},debug-threads=on"),
        "-qmp".to_string(),
        format!("unix:{},server=on,wait=off", qmp.display()),
    ];
    reference_qemu(qemu, case.kernel, case.mib, case.workload, &extra)
}

/// A reference VMM and its version (`--version`).
pub struct Reference {
    pub path: PathBuf,
    pub version: Version,
}

impl Reference {
    /// Runs `PATH --version` and parses its first line.
    pub fn probe(path: &Path) -> Result<Self, String> {
        let out = Command::new(path)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{} --version: {e}", path.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = Version::parse(&text)
            .filter(|_| out.status.success())
            .ok_or_else(|| {
                format!(
                    "{} --version ({}): no `version X.Y.Z` in `{}` (stderr: `{}`)",
                    path.display(),
                    out.status,
                    text.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            version,
        })
    }

    /// `QEMU 10.0`.
    pub fn label(&self) -> String {
        self.version.label()
    }
}

/// One QEMU → QEMU migration driven through QMP (`drive::migrate`).
pub fn run_qemu(qemu: &Reference, set: &Setting, case: &Case) -> Result<Sample, RunError> {
    if let Some(why) = qemu.version.unsupported(set) {
        return Err(RunError::Unsupported(why));
    }
    let path = qemu.path.as_path();
    let sq = case.scratch("src.qmp");
    let dq = case.scratch("dst.qmp");
    let _ = std::fs::remove_file(&sq);
    let _ = std::fs::remove_file(&dq);
    let src = Proc::spawn(qemu_cmd(path, case, &sq, "src"))?;
    src.wait_line(READY, case.ready_line())?;
    let mut c = qemu_cmd(path, case, &dq, "dst");
    c.args(["-incoming", "defer"]);
    let dst = Proc::spawn(c)?;
    let r = drive::migrate((&src, &sq), (&dst, &dq), set, case, drive::Kind::Qemu);
    let _ = std::fs::remove_file(&sq);
    let _ = std::fs::remove_file(&dq);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_command_line() {
        super::super::with_test_case(|case| {
            let c = qemu_cmd(Path::new("qemu"), case, Path::new("/t/q"), "src");
            assert_eq!(
                crate::bench_vmm::tests::line(&c),
                "qemu -M microvm -enable-kvm -m 256 -no-reboot -display none -monitor none -nodefaults \
             -serial stdio -name src,debug-threads=on -qmp unix:/t/q,server=on,wait=off \
             -kernel g.elf -append workload=ab"
            );
        });
    }
}
