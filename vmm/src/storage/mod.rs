//! Storage migration (the seed's "use blockdev-mirror with NBD instead"):
//! an NBD server exporting the guest's drives ([`server`]), NBD targets
//! (`blockdev-add` / drive-mirror URIs, [`target`]) and mirror jobs
//! ([`mirror`]). The QMP commands (`control/qmp/block.rs`) call [`Storage`].

pub mod addr;
pub mod mirror;
pub mod server;
pub mod target;
pub mod tls;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use devices::bus::lock;
use devices::disk::Disk;
use serde_json::{Value, json};

use addr::Addr;
use mirror::{Mirror, Status};
use server::{DiskExport, Export, NbdServer};
use target::NbdTarget;

/// Sends a QMP event (name, data) to every client.
pub type Emit = Arc<dyn Fn(&str, Value) + Send + Sync>;

/// A drive of the command line, by the names QMP uses for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriveInfo {
    /// Its node name: the `--drive id=`, else the disk's id (`virtio-blk0`).
    pub node: String,
    /// The disk (`virtio-blk-device`) on it.
    pub device: String,
    pub path: PathBuf,
    pub read_only: bool,
}

/// A `blockdev-add`ed NBD node (a mirror target).
#[derive(Clone)]
struct Node {
    addr: Addr,
    export: String,
    tls: Option<Arc<migration::secure::TlsClient>>,
}

/// The drives, the NBD server, the target nodes and the jobs of one VMM.
pub struct Storage {
    drives: Vec<DriveInfo>,
    emit: Emit,
    server: Mutex<Option<NbdServer>>,
    nodes: Mutex<BTreeMap<String, Node>>,
    jobs: Mutex<BTreeMap<String, Arc<Mirror>>>,
}

impl Storage {
    pub fn new(drives: Vec<DriveInfo>, emit: Emit) -> Self {
        Self {
            drives,
            emit,
            server: Mutex::new(None),
            nodes: Mutex::default(),
            jobs: Mutex::default(),
        }
    }

    /// No drives, events dropped (control tests).
    pub fn none() -> Self {
        Self::new(Vec::new(), Arc::new(|_, _| {}))
    }

    /// A drive by node name or device id.
    pub fn drive(&self, name: &str) -> Result<&DriveInfo, String> {
        self.drives
            .iter()
            .find(|d| d.node == name || d.device == name)
            .ok_or_else(|| format!("Cannot find device='{name}' nor node-name='{name}'"))
    }

    fn open(&self, name: &str) -> Result<(DriveInfo, Arc<Disk>), String> {
        let d = self.drive(name)?.clone();
        let disk = Disk::open(&d.path, d.read_only)
            .map_err(|e| format!("{}: {}: {e}", d.node, d.path.display()))?;
        Ok((d, disk))
    }

    /// `query-block`.
    pub fn query_block(&self) -> Value {
        Value::Array(
            self.drives
                .iter()
                .map(|d| {
                    let size = std::fs::metadata(&d.path).map(|m| m.len()).unwrap_or(0);
                    json!({
                        "device": d.node,
                        "qdev": d.device,
                        "locked": false,
                        "removable": false,
                        "type": "unknown",
                        "inserted": {
                            "file": d.path.display().to_string(),
                            "node-name": d.node,
                            "ro": d.read_only,
                            "drv": "raw",
                            "image": {"filename": d.path.display().to_string(), "format": "raw", "virtual-size": size},
                        },
                    })
                })
                .collect(),
        )
    }

    /// `nbd-server-start`.
    pub fn nbd_start(
        &self,
        addr: Addr,
        tls: Option<Arc<migration::secure::TlsServer>>,
    ) -> Result<(), String> {
        let mut s = lock(&self.server);
        if s.is_some() {
            return Err("NBD server already running".into());
        }
        *s = Some(NbdServer::start(addr, tls)?);
        Ok(())
    }

    /// `nbd-server-stop`.
    pub fn nbd_stop(&self) -> Result<(), String> {
        match lock(&self.server).take() {
            Some(s) => {
                s.stop();
                Ok(())
            }
            None => Err("NBD server not running".into()),
        }
    }

    /// `block-export-add` (`type: nbd`) and `nbd-server-add`.
    pub fn export_add(
        &self,
        id: &str,
        node: &str,
        name: Option<&str>,
        writable: bool,
        description: Option<&str>,
    ) -> Result<(), String> {
        let s = lock(&self.server);
        let server = s.as_ref().ok_or("NBD server not running")?;
        let (d, disk) = self.open(node)?;
        if writable && d.read_only {
            return Err(format!(
                "Cannot export the read-only node '{}' as writable",
                d.node
            ));
        }
        let name = name.unwrap_or(&d.node).to_string();
        if name.len() > 4096 {
            return Err("export name longer than 4096 bytes".into());
        }
        server.add(Export {
            id: id.to_string(),
            node: d.node.clone(),
            entry: nbd::ExportEntry {
                name,
                description: description.unwrap_or_default().to_string(),
                writable,
                export: Arc::new(DiskExport(disk)),
            },
        })
    }

    /// `block-export-del` (by id) and `nbd-server-remove` (by name).
    pub fn export_del(&self, key: &str, by_name: bool) -> Result<(), String> {
        let s = lock(&self.server);
        let server = s.as_ref().ok_or("NBD server not running")?;
        let e = server.remove(key, by_name)?;
        (self.emit)("BLOCK_EXPORT_DELETED", json!({"id": e.id}));
        Ok(())
    }

    /// `query-block-exports`.
    pub fn query_exports(&self) -> Value {
        let s = lock(&self.server);
        Value::Array(
            s.iter()
                .flat_map(|s| s.exports())
                .map(|e| json!({"type": "nbd", "id": e.id, "node-name": e.node, "shutting-down": false}))
                .collect(),
        )
    }

    /// `blockdev-add` with `driver: nbd`.
    pub fn node_add(
        &self,
        name: &str,
        addr: Addr,
        export: String,
        tls: Option<Arc<migration::secure::TlsClient>>,
    ) -> Result<(), String> {
        if self.drive(name).is_ok() {
            return Err(format!("Duplicate nodes with node-name='{name}'"));
        }
        let mut n = lock(&self.nodes);
        if n.contains_key(name) {
            return Err(format!("Duplicate nodes with node-name='{name}'"));
        }
        n.insert(name.to_string(), Node { addr, export, tls });
        Ok(())
    }

    /// `blockdev-del`.
    pub fn node_del(&self, name: &str) -> Result<(), String> {
        lock(&self.nodes)
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| format!("Failed to find node with node-name='{name}'"))
    }

    /// `blockdev-mirror` (target: a node) / `drive-mirror` (target: an NBD URI).
    pub fn mirror(
        &self,
        job: &str,
        device: &str,
        target: Result<&str, &str>,
    ) -> Result<(), String> {
        let (d, disk) = self.open(device)?;
        {
            let mut jobs = lock(&self.jobs);
            jobs.retain(|_, j| j.status() != Status::Concluded);
            if jobs.contains_key(job) {
                return Err(format!("Job ID '{job}' already in use"));
            }
        }
        let (addr, export, tls) = match target {
            Ok(node) => {
                let n = lock(&self.nodes)
                    .get(node)
                    .cloned()
                    .ok_or_else(|| format!("Cannot find device='{node}' nor node-name='{node}'"))?;
                (n.addr, n.export, n.tls)
            }
            Err(uri) => {
                let (a, e) = Addr::from_uri(uri)?;
                (a, e, None)
            }
        };
        let t = NbdTarget::connect(&addr, &export, tls)?;
        let m = Mirror::start(
            job.to_string(),
            d.node.clone(),
            disk,
            Box::new(t),
            self.emit.clone(),
        )?;
        lock(&self.jobs).insert(job.to_string(), m);
        Ok(())
    }

    fn job(&self, id: &str) -> Result<Arc<Mirror>, String> {
        lock(&self.jobs)
            .get(id)
            .filter(|j| j.status() != Status::Concluded)
            .cloned()
            .ok_or_else(|| format!("Block job '{id}' not found"))
    }

    /// `query-block-jobs`.
    pub fn jobs_info(&self) -> Value {
        let mut jobs = lock(&self.jobs);
        jobs.retain(|_, j| j.status() != Status::Concluded);
        Value::Array(jobs.values().map(|j| j.info()).collect())
    }

    /// `block-job-cancel`.
    pub fn job_cancel(&self, id: &str, force: bool) -> Result<(), String> {
        self.job(id)?.cancel(force);
        Ok(())
    }

    /// `block-job-complete`.
    pub fn job_complete(&self, id: &str) -> Result<(), String> {
        self.job(id)?.complete()
    }
}

#[cfg(test)]
mod tests;
