//! The reference, paused under TCG with one instance of each shared
//! device type, read over QMP.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Stands for the first vCPU's QOM path (from `query-cpus-fast`).
pub const CPU: &str = "(cpu 0)";

/// A reference binary, its version, and the accelerator it runs under.
pub struct Reference {
    bin: crate::bench_migrate::Reference,
    /// `tcg`, or `kvm` for a binary without its TCG module (Debian's 7.2
    /// unpacked by scripts/reference-qemu.sh).
    accel: std::cell::Cell<&'static str>,
}

impl Reference {
    /// Runs `PATH --version` (as the migration benchmark does).
    pub fn probe(path: &Path) -> Result<Self, String> {
        Ok(Self {
            bin: crate::bench_migrate::Reference::probe(path)?,
            accel: std::cell::Cell::new("tcg"),
        })
    }

    /// `(major, minor)`.
    pub fn version(&self) -> (u32, u32) {
        (self.bin.version.0, self.bin.version.1)
    }

    /// `QEMU 10.0`.
    pub fn label(&self) -> String {
        self.bin.label()
    }

    /// The accelerator the reference runs under.
    pub fn accel(&self) -> &'static str {
        self.accel.get()
    }

    /// The paused reference on `machine` with one instance of each shared
    /// type, its QMP socket at `qmp`.
    pub fn command(&self, machine: &str, qmp: &Path) -> Command {
        let mut c = Command::new(&self.bin.path);
        c.args([
            "-M",
            machine,
            "-accel",
            self.accel.get(),
            "-S",
            "-display",
            "none",
            "-nodefaults",
        ])
        .args(["-cpu", "qemu64", "-smp", "1"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .args(["-device", "pcie-root-port,id=rp0"])
        .args(["-device", "isa-serial,id=ser0"])
        .args(["-drive", "if=none,id=d0,driver=null-co"])
        .args(["-device", "virtio-blk-pci,id=blk0,drive=d0,bus=rp0"])
        .args(["-device", "virtio-rng-pci,id=rng0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        c
    }

    /// Reads `(type, property)` for every wanted `(type, path, props)`:
    /// the canonical value, or `(absent)` when the reference has no such
    /// property there.
    pub fn read(
        &self,
        machine: &str,
        wanted: &[(&str, &str, Vec<String>)],
    ) -> Result<BTreeMap<(String, String), String>, String> {
        let qmp =
            std::env::temp_dir().join(format!("vmm-oracle-{}-{machine}.qmp", std::process::id()));
        let _ = std::fs::remove_file(&qmp);
        let mut child = self
            .command(machine, &qmp)
            .spawn()
            .map_err(|e| format!("{}: {e}", self.bin.path.display()))?;
        let r = self.session(&qmp, machine, wanted);
        let _ = child.kill();
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&qmp);
        let err = String::from_utf8_lossy(&out.stderr);
        if r.is_err() && self.accel.get() == "tcg" && err.contains("tcg-accel-ops") {
            // This binary has no TCG: paused, KVM reads the same tables.
            self.accel.set("kvm");
            return self.read(machine, wanted);
        }
        r.map_err(|e| format!("{} -M {machine}: {e}\n{err}", self.label()))
    }

    fn session(
        &self,
        qmp: &Path,
        machine: &str,
        wanted: &[(&str, &str, Vec<String>)],
    ) -> Result<BTreeMap<(String, String), String>, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut c = loop {
            match qmp::Client::connect(qmp, Duration::from_secs(30)) {
                Ok(c) => break c,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => return Err(format!("QMP: {e}")),
            }
        };
        let cpus = c
            .execute("query-cpus-fast", json!({}))
            .map_err(|e| e.to_string())?;
        let cpu = cpus[0]["qom-path"]
            .as_str()
            .unwrap_or("/machine/unattached/device[0]")
            .to_string();
        let mut got = BTreeMap::new();
        for (ty, path, props) in wanted {
            let path = if *path == CPU { cpu.as_str() } else { path };
            for p in props {
                let v = match c.execute("qom-get", json!({ "path": path, "property": p })) {
                    Ok(Value::Bool(b)) => if b { "on" } else { "off" }.to_string(),
                    Ok(Value::Number(n)) => n.to_string(),
                    Ok(Value::String(s)) => super::canonical(&s),
                    Ok(other) => other.to_string(),
                    Err(_) => "(absent)".to_string(),
                };
                got.insert((ty.to_string(), p.clone()), v);
            }
        }
        // Machine knobs: `cpu-max` of `query-machines` (our `max_cpus`).
        let all = c
            .execute("query-machines", json!({}))
            .map_err(|e| e.to_string())?;
        let cpu_max = all
            .as_array()
            .and_then(|a| a.iter().find(|m| m["name"] == machine))
            .map_or_else(|| "(absent)".to_string(), |m| m["cpu-max"].to_string());
        got.insert(
            (super::MACHINE.to_string(), "max_cpus".to_string()),
            cpu_max,
        );
        let _ = c.execute("quit", json!({}));
        Ok(got)
    }
}
