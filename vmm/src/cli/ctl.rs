//! `vmm ctl ...` and `vmm migrate ...`: QMP clients of a running `vmm`
//! (`super::session`), with text or JSON output.

use super::session;
use crate::control::ControlError;
use crate::control::types::{
    DEFAULT_DOWNTIME_LIMIT_MS, DeviceInfo, MigrateRequest, StatusInfo, VerifyAbResult,
};
use migration::precopy::{Outcome, Phase, Progress, Summary};
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

/// `vmm ctl --control PATH COMMAND`
#[derive(clap::Args, Debug)]
pub struct CtlArgs {
    /// The running vmm's QMP socket (`vmm run --control` or `--qmp`).
    #[arg(long, value_name = "PATH")]
    pub control: PathBuf,
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// What `vmm ctl` asks.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum CtlCommand {
    /// Pause the guest's vCPUs.
    Stop,
    /// Resume the guest's vCPUs.
    Cont,
    /// Show the VM's state, machine type and pinned properties.
    Status {
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Show the running device instances: id, type, place, backend facts,
    /// every property with its provenance (like the reference's `info qtree`).
    Qtree {
        /// Print the devices as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Shut the VM down and exit.
    Quit,
    /// Cancel the outgoing migration; the guest keeps running here.
    MigrateCancel,
    /// Reset the guest (like its own reset through port 0xcf9): it reboots
    /// in this process with the same configuration, pinned properties kept.
    SystemReset,
    /// Press the guest's power button (ACPI PM1 PWRBTN_STS).
    SystemPowerdown,
    /// Any QMP command, its `return` printed as JSON (`vmm ctl qmp
    /// qom-get '{"path": "disk0", "property": "serial"}'`).
    Qmp {
        /// The command (`query-status`, `qom-list`...).
        command: String,
        /// Its arguments, a JSON object.
        #[arg(default_value = "{}")]
        arguments: String,
    },
    /// Check the `ab` workload's memory image on the stopped guest (DESIGN.md §4).
    VerifyAb {
        /// Guest-physical start of the range (the guest's `ab: start=0x...`).
        #[arg(long, value_parser = parse_addr)]
        start: u64,
        /// Number of pages (the guest's `ab: ... pages=N`).
        #[arg(long)]
        pages: u64,
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
    },
}

/// Parses `0x11f000` or a decimal number.
pub fn parse_addr(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("`{s}` is not an address (e.g. 0x11f000)"))
}

/// `vmm migrate --control PATH URI`
#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// The source vmm's QMP socket (`vmm run --control` or `--qmp`).
    #[arg(long, value_name = "PATH")]
    pub control: PathBuf,
    /// Destination: tcp:HOST:PORT, unix:PATH or file:PATH (a snapshot).
    pub uri: String,
    /// Upper bound on the guest's downtime, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_DOWNTIME_LIMIT_MS)]
    pub downtime_limit: u64,
    /// Cap on the bandwidth, in bytes per second (K, M, G suffixes: powers of 1024).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub max_bandwidth: Option<u64>,
    /// Print progress events and the summary as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// A `file:` snapshot may replace an existing file (refused otherwise).
    #[arg(long)]
    pub overwrite: bool,
    /// TLS 1.3 on every connection, authenticated both ways: an x509
    /// directory (`ca-cert.pem`, `client-cert.pem`, `client-key.pem`) or
    /// `psk:FILE`; for a `file:` snapshot, `psk:FILE` seals it.
    #[arg(long, value_name = "DIR|psk:FILE")]
    pub tls_creds: Option<String>,
    /// The name the destination's certificate must have (default: the
    /// URI's host).
    #[arg(long, value_name = "NAME", requires = "tls_creds")]
    pub tls_hostname: Option<String>,
    /// Move the disks too (docs/storage.md): export the destination's
    /// drives over NBD, mirror every drive there until READY, then migrate.
    #[arg(long, requires = "dest_control")]
    pub with_storage: bool,
    /// The destination's QMP socket (on this host), for --with-storage; the
    /// destination runs `--incoming defer` with its own images.
    #[arg(long, value_name = "PATH")]
    pub dest_control: Option<PathBuf>,
    /// The destination's NBD port for a tcp: URI (default: the URI's port + 1).
    #[arg(long, value_name = "PORT", requires = "with_storage")]
    pub nbd_port: Option<u16>,
    /// Deprecated in the reference (8.2), never implemented here: prints the
    /// replacement (`compat/deprecations.toml`) and refuses.
    #[arg(long, hide = true)]
    pub inc: bool,
    /// Deprecated in the reference (8.2), never implemented here: refused.
    #[arg(long, hide = true)]
    pub blk: bool,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

/// How a migration moves guest RAM (`vmm migrate`, `vmm demo`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TransferArgs {
    /// Data connections besides the main one (0..=16): RAM is spread over
    /// them, each sent and received on its own thread.
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=16))]
    pub channels: u32,
    /// Compression of page contents: none, zstd or zstd:LEVEL (1..=19). A
    /// bare `--compress` is the reference's old compression method:
    /// refused, naming its replacement.
    #[arg(long, value_name = "METHOD", num_args = 0..=1, default_missing_value = OLD_COMPRESSION)]
    pub compress: Option<String>,
}

/// What a bare `--compress` stands for.
const OLD_COMPRESSION: &str = "old";

impl TransferArgs {
    /// Whether the reference's old method was asked for.
    pub fn old_compression(&self) -> bool {
        self.compress.as_deref() == Some(OLD_COMPRESSION)
    }

    /// The request's fields (`compress` checked by the VMM that runs it).
    pub fn request(&self) -> (u32, Option<String>) {
        (self.channels, self.compress.clone().filter(|c| c != "none"))
    }
}

/// Parses `1000`, `64K`, `100M`, `1G`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let (num, shift) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 10),
        Some((i, 'm' | 'M')) => (&s[..i], 20),
        Some((i, 'g' | 'G')) => (&s[..i], 30),
        _ => (s, 0),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{s}` is not a positive byte count (e.g. 1000, 64K, 100M, 1G)"))
}

/// Runs `vmm ctl`.
pub fn ctl(args: &CtlArgs) -> Result<(), ControlError> {
    let mut c = session::connect(&args.control)?;
    let simple = |c: &mut qmp::Client, cmd: &str| -> Result<(), ControlError> {
        c.execute(cmd, json!({}))?;
        Ok(())
    };
    match &args.command {
        CtlCommand::Stop => simple(&mut c, "stop"),
        CtlCommand::Cont => simple(&mut c, "cont"),
        CtlCommand::Quit => simple(&mut c, "quit"),
        CtlCommand::MigrateCancel => simple(&mut c, "migrate_cancel"),
        CtlCommand::SystemReset => simple(&mut c, "system_reset"),
        CtlCommand::SystemPowerdown => simple(&mut c, "system_powerdown"),
        CtlCommand::Qmp { command, arguments } => {
            let a: serde_json::Value = serde_json::from_str(arguments)
                .map_err(|e| ControlError::Remote(format!("arguments `{arguments}`: {e}")))?;
            println!("{}", c.execute(command, a)?);
            Ok(())
        }
        CtlCommand::VerifyAb { start, pages, json } => {
            let r = session::verify_ab(&mut c, *start, *pages)?;
            if *json {
                println!("{}", json!(r));
            } else {
                print!("{}", verify_text(&r));
            }
            if !r.consistent {
                return Err(ControlError::Remote(format!(
                    "the a-b memory image is inconsistent: {}",
                    r.violation.as_deref().unwrap_or("?")
                )));
            }
            Ok(())
        }
        CtlCommand::Qtree { json } => {
            let v = c.execute("x-vmm-status", json!({}))?;
            let st: StatusInfo = serde_json::from_value(v)
                .map_err(|e| ControlError::Remote(format!("unexpected x-vmm-status: {e}")))?;
            if *json {
                println!("{}", json!(st.devices));
            } else {
                print!("{}", qtree_text(&st.devices));
            }
            Ok(())
        }
        CtlCommand::Status { json } => {
            let v = c.execute("x-vmm-status", json!({}))?;
            if *json {
                println!("{v}");
            } else {
                print!("{}", status_text(&v));
            }
            Ok(())
        }
    }
}

/// The `verify-ab` answer as text.
pub fn verify_text(r: &VerifyAbResult) -> String {
    let mut s = format!(
        "verify-ab: pages={} verdict={} first={:#04x}",
        r.pages,
        if r.consistent {
            "consistent"
        } else {
            "INCONSISTENT"
        },
        r.first
    );
    if let Some(p) = r.step_at {
        s.push_str(&format!(" step_at={p}"));
    }
    s.push('\n');
    if let Some(v) = &r.violation {
        s.push_str(&format!("violation: {v}\n"));
    }
    for b in &r.bad_pages {
        s.push_str(&format!(
            "  bad page {} at {:#x}: {:#04x} after {:#04x}\n",
            b.page, b.addr, b.value, b.prev
        ));
    }
    s
}

/// The device instances as an indented list, one block per instance.
pub fn qtree_text(devices: &[DeviceInfo]) -> String {
    let mut out = String::new();
    for d in devices {
        let i = &d.instance;
        out.push_str(&format!(
            "dev: {}, id \"{}\"\n  at {}\n",
            i.type_name, i.id, i.addr
        ));
        for (k, v) in &i.facts {
            out.push_str(&format!("  {k} = {v} (backend)\n"));
        }
        for (k, p) in &d.props {
            out.push_str(&format!("  {k} = {} ({})\n", p.value, p.provenance));
        }
    }
    out
}

fn status_text(v: &serde_json::Value) -> String {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_string();
    let mut out = format!(
        "state: {}\nmachine: {}\nrelease: {}\n",
        s("state"),
        s("machine_type"),
        s("release")
    );
    if let Some(pinned) = v
        .get("pinned")
        .and_then(|p| p.as_array())
        .filter(|p| !p.is_empty())
    {
        out.push_str("pinned properties:\n");
        for p in pinned {
            let f = |k: &str| p.get(k).and_then(|x| x.as_str()).unwrap_or("?");
            out.push_str(&format!(
                "  {}.{}={} (from {})\n",
                f("device"),
                f("property"),
                f("value"),
                f("provenance")
            ));
            if let Some(o) = p.get("origin").and_then(|x| x.as_str()) {
                out.push_str(&format!("    first set by {o}\n"));
            }
        }
    }
    out
}

/// Runs `vmm migrate`: progress on a terminal (or JSON lines), then the summary.
pub fn migrate(args: &MigrateArgs) -> Result<(), ControlError> {
    let deprecated = [
        ("inc", args.inc),
        ("blk", args.blk),
        ("compress", args.transfer.old_compression()),
    ];
    crate::release::lifecycle::migrate_options(crate::builder::config::catalog(), &deprecated)
        .map_err(|e| ControlError::Remote(e.to_string()))?;
    let mut c = session::connect(&args.control)?;
    let (channels, compress) = args.transfer.request();
    let req = MigrateRequest {
        uri: args.uri.clone(),
        downtime_limit: args.downtime_limit,
        max_bandwidth: args.max_bandwidth,
        channels,
        compress,
        overwrite: args.overwrite,
        tls: args
            .tls_creds
            .as_ref()
            .map(|c| crate::control::types::TlsSettings {
                creds: c.clone(),
                hostname: args.tls_hostname.clone(),
                authz: Vec::new(),
            }),
    };
    let tty = std::io::stderr().is_terminal();
    let json = args.json;
    let mut on_progress = |p: &Progress| {
        if json {
            let mut v = json!(p);
            v["event"] = json!("progress");
            println!("{v}");
        } else if tty {
            eprint!("\r\x1b[K{}", progress_text(p));
            let _ = std::io::stderr().flush();
        }
    };
    let storage = match (&args.dest_control, args.with_storage) {
        (Some(dst), true) => {
            let (mut d, jobs) =
                super::storage::mirror_all(&mut c, dst, &args.uri, args.nbd_port, json)?;
            // A deferred destination listens now (a listening one already does).
            let listening = d.execute("query-migrate", json!({}))?["status"] == "setup";
            if !listening {
                d.execute("migrate-incoming", json!({ "uri": args.uri }))?;
            }
            Some((d, jobs))
        }
        _ => None,
    };
    let r = session::migrate(&mut c, &req, &mut on_progress);
    if tty && !json {
        eprintln!();
    }
    let sum = r?;
    if let Some((mut d, jobs)) = storage {
        super::storage::finish(&mut c, &mut d, &jobs)?;
    }
    if json {
        println!("{}", json!({ "summary": sum }));
    } else {
        print!("{}", summary_text(&sum));
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// One progress line.
pub fn progress_text(p: &Progress) -> String {
    let phase = match p.phase {
        Phase::Precopy => "pre-copy",
        Phase::Stopped => "stopped",
    };
    let expected = if p.bandwidth == 0 {
        "not measured yet".to_string()
    } else {
        format!("{:.1} ms", p.expected_downtime_ms)
    };
    let mut s = format!(
        "{phase} iteration {}: {:.1} MiB sent, pages {} zero / {} normal, {} dirty, {:.0} MiB/s, expected downtime {expected}",
        p.iteration,
        mib(p.bytes),
        p.pages_zero,
        p.pages_normal,
        p.dirty_pages,
        mib(p.bandwidth),
    );
    if p.throttle > 0 {
        s.push_str(&format!(", vCPUs throttled {}%", p.throttle));
    }
    s
}

/// The final summary, one fact per line.
pub fn summary_text(s: &Summary) -> String {
    let what = match s.outcome {
        Outcome::Handover => "migration completed: the guest runs on the destination",
        Outcome::Snapshot => {
            "snapshot written: the guest is stopped here (`vmm ctl cont` resumes it)"
        }
    };
    format!(
        "{what}\ntotal time: {:.1} ms\ndowntime: {:.1} ms\nbytes sent: {} ({:.1} MiB)\npages: {} zero, {} normal\niterations: {}\n{}",
        s.total_ms,
        s.downtime_ms,
        s.bytes,
        mib(s.bytes),
        s.pages_zero,
        s.pages_normal,
        s.iterations,
        if s.max_throttle > 0 {
            format!("auto-converge: vCPUs throttled up to {}%\n", s.max_throttle)
        } else {
            String::new()
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qtree_lists_each_instance_with_facts_and_props() {
        use migration::manifest::{DeviceInstance, PropValue};
        let d = DeviceInfo {
            instance: DeviceInstance {
                id: "virtio-blk0".into(),
                type_name: "virtio-blk-device".into(),
                addr: "virtio-mmio 0xd0000000 gsi 5".into(),
                props: Default::default(),
                backend: None,
                facts: [("serial".to_string(), "AAA".to_string())].into(),
            },
            props: [(
                "num-queues".to_string(),
                PropValue::new("1", "hw_compat_5_1"),
            )]
            .into(),
        };
        assert_eq!(
            qtree_text(&[d]),
            "dev: virtio-blk-device, id \"virtio-blk0\"\n  at virtio-mmio 0xd0000000 gsi 5\n  serial = AAA (backend)\n  num-queues = 1 (hw_compat_5_1)\n"
        );
    }

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("100m"), Ok(100 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        for bad in ["", "0", "x", "1T", "-1", "99999999999999999999G"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn texts() {
        let s = Summary {
            outcome: Outcome::Handover,
            total_ms: 812.25,
            downtime_ms: 4.5,
            bytes: 3 << 20,
            pages_zero: 10,
            pages_normal: 700,
            iterations: 4,
            max_throttle: 30,
        };
        let t = summary_text(&s);
        assert!(
            t.contains("downtime: 4.5 ms") && t.contains("iterations: 4") && t.contains("30%"),
            "{t}"
        );
        let v = serde_json::json!({"state": "running", "machine_type": "pc-7.2", "release": "8.0.1",
            "pinned": [{"device": "pci-device", "property": "x-pcie-err-unc-mask", "value": "on", "provenance": "stream"}]});
        let t = status_text(&v);
        assert!(
            t.contains("pci-device.x-pcie-err-unc-mask=on (from stream)"),
            "{t}"
        );
    }
}
