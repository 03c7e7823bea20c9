//! What `bench-boot` and `bench-migrate` share: the `vmm` binary they run
//! (`--vmm`, or `target/release/vmm` built first), the guest ELF both VMMs
//! boot, both VMMs' command lines, and a child process read line by line.
//! xtask never links `vmm`: it drives the real binaries as processes.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// The VMMs to measure and the guest both boot.
#[derive(clap::Args, Debug, Clone)]
pub struct VmmArgs {
    /// The reference VMM (e.g. the wrapper printed by scripts/reference-qemu.sh).
    #[arg(long)]
    pub qemu: Option<PathBuf>,
    #[command(flatten)]
    pub bins: Binaries,
}

impl std::ops::Deref for VmmArgs {
    type Target = Binaries;

    fn deref(&self) -> &Binaries {
        &self.bins
    }
}

/// The `vmm` binary to measure and the guest ELF (every benchmark's).
#[derive(clap::Args, Debug, Clone)]
pub struct Binaries {
    /// Guest ELF for both VMMs (default: vmm's embedded guest, written to a temp file).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// The vmm binary to measure [default: target/release/vmm, built first
    /// with `cargo build --release -p vmm`].
    #[arg(long, value_name = "PATH")]
    pub vmm: Option<PathBuf>,
    /// Do not run `cargo build --release -p vmm` first (it still runs if
    /// target/release/vmm does not exist).
    #[arg(long)]
    pub no_build: bool,
}

impl Binaries {
    /// The binary to run: `--vmm` as given, or the default one, built first
    /// unless `--no-build` is given and it exists.
    pub fn binary(&self) -> Result<PathBuf, String> {
        if let Some(path) = &self.vmm {
            return if path.is_file() {
                Ok(path.clone())
            } else {
                Err(format!("--vmm {}: no such file", path.display()))
            };
        }
        let root = crate::root();
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => root.join(dir),
            None => root.join("target"),
        };
        let path = target.join("release/vmm");
        let exists = path.is_file();
        if exists && self.no_build {
            return Ok(path);
        }
        let why = if exists {
            "--no-build skips this".to_string()
        } else {
            format!("{} does not exist", path.display())
        };
        eprintln!("xtask: cargo build --release -p vmm ({why})");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "vmm"])
            .current_dir(&root)
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("cargo build --release -p vmm: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build --release -p vmm failed ({status})"));
        }
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{} missing after the build", path.display()))
        }
    }

    /// The guest ELF both VMMs boot (`--kernel`, or `vmm`'s own); `tag`
    /// names the temporary file.
    pub fn guest(&self, vmm: &Path, tag: &str) -> Result<Guest, String> {
        Guest::new(self.kernel.as_deref(), vmm, tag)
    }
}

/// The guest ELF both VMMs boot: `--kernel`, or the `vmm` binary's embedded
/// guest written to a temporary file by `vmm guest-elf` (removed on drop).
pub struct Guest {
    path: PathBuf,
    temporary: bool,
}

impl Guest {
    /// `kernel` if given, else the embedded guest of `vmm`; `tag` names the
    /// temporary file.
    fn new(kernel: Option<&Path>, vmm: &Path, tag: &str) -> Result<Self, String> {
        if let Some(k) = kernel {
            return Ok(Self {
                path: k.to_path_buf(),
                temporary: false,
            });
        }
        let path =
            std::env::temp_dir().join(format!("vmm-bench-{tag}-guest-{}.elf", std::process::id()));
        let out = Command::new(vmm)
            .arg("guest-elf")
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("write guest: {} guest-elf: {e}", vmm.display()))?;
        if !out.status.success() {
            return Err(format!(
                "write guest: {} guest-elf failed: {}",
                vmm.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self {
            path,
            temporary: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `vmm run -m {mib}M --kernel ELF --append workload=W`.
pub fn vmm_run(vmm: &Path, kernel: &Path, mib: u64, workload: &str) -> Command {
    let mut c = Command::new(vmm);
    c.args(["run", "-m", &format!("{mib}M"), "--kernel"])
        .arg(kernel)
        .args(["--append", &format!("workload={workload}")]);
    c
}

/// The reference VMM booting `kernel` with `workload=W` in a microvm, its
/// serial port on stdio, `extra` options before `-kernel`.
pub fn reference_qemu(
    qemu: &Path,
    kernel: &Path,
    mib: u64,
    workload: &str,
    extra: &[String],
) -> Command {
    let mut c = Command::new(qemu);
    c.args([
        "-M",
        "microvm",
        "-enable-kvm",
        "-m",
        &mib.to_string(),
        "-no-reboot",
    ])
    .args([
        "-display",
        "none",
        "-monitor",
        "none",
        "-nodefaults",
        "-serial",
        "stdio",
    ])
    .args(extra)
    .arg("-kernel")
    .arg(kernel)
    .args(["-append", &format!("workload={workload}")]);
    c
}

/// A child killed on drop, its stdout as lines, its stderr collected.
pub struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Result<Self, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {cmd:?}: {e}"))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let mut err = child.stderr.take().ok_or("no stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Ok(Self {
            child,
            lines: rx,
            stderr,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits up to `timeout` for a line starting with `prefix`.
    pub fn wait_line(&self, timeout: Duration, prefix: &str) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or_else(|| format!("no `{prefix}` line; stderr: {}", self.stderr()))?;
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(l),
                Ok(_) => {}
                Err(_) => {
                    return Err(format!("no `{prefix}` line; stderr: {}", self.stderr()));
                }
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A command line as text.
    pub fn line(c: &Command) -> String {
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        format!("{} {}", c.get_program().to_string_lossy(), args.join(" "))
    }

    #[test]
    fn both_vmms_boot_the_same_elf_with_the_same_workload() {
        let (elf, vmm, qemu) = (Path::new("g.elf"), Path::new("vmm"), Path::new("qemu"));
        assert_eq!(
            line(&vmm_run(vmm, elf, 64, "idle")),
            "vmm run -m 64M --kernel g.elf --append workload=idle"
        );
        assert_eq!(
            line(&reference_qemu(qemu, elf, 64, "idle", &[])),
            "qemu -M microvm -enable-kvm -m 64 -no-reboot -display none -monitor none \
             -nodefaults -serial stdio -kernel g.elf -append workload=idle"
        );
    }
}
