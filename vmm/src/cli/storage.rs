//! `vmm migrate --with-storage --dest-control DST URI`: the reference's
//! storage-migration sequence (docs/storage.md) in one command, for a
//! destination whose QMP socket is on this host and which migrates over
//! `unix:` or `tcp:` — exports its drives over NBD, mirrors every source
//! drive to them until READY, migrates the RAM, ends the mirrors in step and
//! stops the NBD server. Progress lines for the disks, then for the RAM.

use crate::control::ControlError;
use qmp::Client;
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the disks may take to reach READY.
const READY_TIMEOUT: Duration = Duration::from_secs(3600);
const POLL: Duration = Duration::from_millis(200);

fn remote(e: impl std::fmt::Display) -> ControlError {
    ControlError::Remote(e.to_string())
}

/// Where the destination's NBD server listens, from the migration URI:
/// `unix:PATH` → `PATH.nbd`; `tcp:HOST:PORT` → `HOST:(nbd_port or PORT+1)`.
pub fn nbd_addr(uri: &str, nbd_port: Option<u16>) -> Result<(Value, String), ControlError> {
    if let Some(path) = uri.strip_prefix("unix:") {
        let sock = format!("{path}.nbd");
        let _ = std::fs::remove_file(&sock);
        return Ok((
            json!({"type": "unix", "data": {"path": sock}}),
            format!("nbd+unix:///{{}}?socket={sock}"),
        ));
    }
    if let Some(hp) = uri.strip_prefix("tcp:") {
        let (host, port) = hp
            .rsplit_once(':')
            .ok_or_else(|| remote(format!("--with-storage: bad URI {uri}")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| remote(format!("--with-storage: bad port in {uri}")))?;
        let nbd = match nbd_port {
            Some(p) => p,
            None => port.checked_add(1).filter(|_| port != 0).ok_or_else(|| {
                remote("--with-storage over tcp: needs a fixed port (or --nbd-port)")
            })?,
        };
        return Ok((
            json!({"type": "inet", "data": {"host": host, "port": nbd.to_string()}}),
            format!("nbd://{host}:{nbd}/{{}}"),
        ));
    }
    Err(remote(format!(
        "--with-storage migrates to unix:PATH or tcp:HOST:PORT, not {uri}"
    )))
}

/// The node names of a vmm's drives (`query-block`).
fn drives(c: &mut Client) -> Result<Vec<String>, ControlError> {
    let v = c.execute("query-block", json!({}))?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["device"].as_str().map(str::to_string))
        .collect())
}

/// Exports the destination's drives and mirrors the source's onto them;
/// returns once every mirror is READY (progress on stderr).
pub fn mirror_all(
    src: &mut Client,
    dst_sock: &Path,
    uri: &str,
    nbd_port: Option<u16>,
    json_lines: bool,
) -> Result<(Client, Vec<String>), ControlError> {
    let mut dst = crate::cli::session::connect(dst_sock)?;
    let nodes = drives(src)?;
    let theirs = drives(&mut dst)?;
    if let Some(missing) = nodes.iter().find(|n| !theirs.contains(n)) {
        return Err(remote(format!(
            "the destination has no drive '{missing}' (it has: {}); start it with the same --drive ids",
            theirs.join(", ")
        )));
    }
    let (addr, target) = nbd_addr(uri, nbd_port)?;
    dst.execute("nbd-server-start", json!({ "addr": addr }))?;
    let mut jobs = Vec::new();
    for n in &nodes {
        dst.execute(
            "block-export-add",
            json!({"type": "nbd", "id": format!("storage-{n}"), "node-name": n, "writable": true}),
        )?;
        let job = format!("storage-{n}");
        src.execute(
            "drive-mirror",
            json!({"device": n, "job-id": job, "sync": "full", "mode": "existing",
                   "target": target.replace("{}", n)}),
        )?;
        jobs.push(job);
    }
    let start = Instant::now();
    loop {
        let info = src.execute("query-block-jobs", json!({}))?;
        let list = info.as_array().cloned().unwrap_or_default();
        for j in &list {
            let line = format!(
                "disk {}: {} / {} MiB{}",
                j["device"].as_str().unwrap_or("?"),
                j["offset"].as_u64().unwrap_or(0) >> 20,
                j["len"].as_u64().unwrap_or(0) >> 20,
                if j["ready"] == true { " (ready)" } else { "" }
            );
            if json_lines {
                println!("{}", json!({"event": "disk", "job": j}));
            } else {
                eprintln!("{line}");
            }
        }
        let _ = std::io::stderr().flush();
        for job in &jobs {
            if !list.iter().any(|j| j["device"] == job.as_str()) {
                let why = src
                    .take_events()
                    .into_iter()
                    .find(|e| {
                        e["event"] == "BLOCK_JOB_COMPLETED" && e["data"]["device"] == job.as_str()
                    })
                    .and_then(|e| e["data"]["error"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "it ended".into());
                return Err(remote(format!("mirror {job} failed: {why}")));
            }
        }
        if list.iter().all(|j| j["ready"] == true) {
            return Ok((dst, jobs));
        }
        if start.elapsed() > READY_TIMEOUT {
            return Err(remote("the disks did not reach READY within an hour"));
        }
        src.pause(POLL)?;
    }
}

/// After the RAM migrated: ends each mirror in step (`block-job-cancel` of
/// a READY job is COMPLETED) and stops the destination's NBD server.
pub fn finish(src: &mut Client, dst: &mut Client, jobs: &[String]) -> Result<(), ControlError> {
    for job in jobs {
        src.execute("block-job-cancel", json!({ "device": job }))?;
    }
    for job in jobs {
        let e = src.wait_event(crate::cli::session::ANSWER_TIMEOUT, |e| {
            (e["event"] == "BLOCK_JOB_COMPLETED" || e["event"] == "BLOCK_JOB_CANCELLED")
                && e["data"]["device"] == job.as_str()
        })?;
        if e["event"] != "BLOCK_JOB_COMPLETED" || e["data"].get("error").is_some() {
            return Err(remote(format!("mirror {job} did not end in step: {e}")));
        }
        eprintln!("disk {job}: in step, ended");
    }
    dst.execute("nbd-server-stop", json!({}))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nbd_addresses_follow_the_migration_uri() {
        let (a, t) = nbd_addr("unix:/run/m.sock", None).unwrap();
        assert_eq!(a["data"]["path"], "/run/m.sock.nbd");
        assert_eq!(
            t.replace("{}", "d0"),
            "nbd+unix:///d0?socket=/run/m.sock.nbd"
        );
        let (a, t) = nbd_addr("tcp:10.0.0.2:4444", None).unwrap();
        assert_eq!(a["data"]["port"], "4445");
        assert_eq!(t.replace("{}", "d0"), "nbd://10.0.0.2:4445/d0");
        assert_eq!(
            nbd_addr("tcp:h:4444", Some(9000)).unwrap().0["data"]["port"],
            "9000"
        );
        assert!(nbd_addr("tcp:h:0", None).is_err());
        assert!(nbd_addr("file:/x", None).is_err());
    }
}
