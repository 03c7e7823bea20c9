//! A QMP session with a running `vmm`: what `vmm ctl`, `vmm migrate` and
//! `vmm demo` send, over the same client any QMP tool would use
//! (`qmp::Client`).

use crate::control::ControlError;
use crate::control::types::{MigrateRequest, VerifyAbResult};
use migration::precopy::{Progress, Summary};
use qmp::Client;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// How long one command may take to be answered.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a running migration is asked for its progress.
const POLL: Duration = Duration::from_millis(50);

/// A negotiated session with the vmm whose QMP socket is `path`.
pub fn connect(path: &Path) -> Result<Client, ControlError> {
    Ok(Client::connect(path, ANSWER_TIMEOUT)?)
}

fn decode<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T, ControlError> {
    serde_json::from_value(v)
        .map_err(|e| ControlError::Remote(format!("unexpected answer to {what}: {e}")))
}

/// `x-vmm-verify-ab`.
pub fn verify_ab(c: &mut Client, start: u64, pages: u64) -> Result<VerifyAbResult, ControlError> {
    let v = c.execute("x-vmm-verify-ab", json!({ "start": start, "pages": pages }))?;
    decode(v, "x-vmm-verify-ab")
}

/// The QMP commands that set `req`'s parameters on a source.
pub fn settings(req: &MigrateRequest) -> Result<Vec<(&'static str, Value)>, ControlError> {
    let mut params = json!({
        "downtime-limit": req.downtime_limit,
        "max-bandwidth": req.max_bandwidth.unwrap_or(0),
    });
    let multifd = req.channels > 0;
    // TLS as asked, or off (parameters persist on the vmm, as in the reference).
    let tls = req.tls.clone().unwrap_or_default();
    params["tls-creds"] = json!(tls.creds);
    params["tls-hostname"] = json!(tls.hostname.unwrap_or_default());
    if multifd {
        params["multifd-channels"] = json!(req.channels);
    }
    match req.compress.as_deref() {
        None | Some("none") => params["multifd-compression"] = json!("none"),
        Some(c) => {
            let level = match c.strip_prefix("zstd") {
                Some("") => 1,
                Some(l) => l
                    .strip_prefix(':')
                    .and_then(|l| l.parse::<u32>().ok())
                    .ok_or_else(|| ControlError::Remote(format!("bad compression `{c}`")))?,
                None => {
                    return Err(ControlError::Remote(format!(
                        "bad compression `{c}` (none, zstd or zstd:LEVEL)"
                    )));
                }
            };
            params["multifd-compression"] = json!("zstd");
            params["multifd-zstd-level"] = json!(level);
        }
    }
    Ok(vec![
        (
            "migrate-set-capabilities",
            json!({ "capabilities": [{ "capability": "multifd", "state": multifd }] }),
        ),
        ("migrate-set-parameters", params),
    ])
}

/// Runs an outgoing migration to completion: sets its parameters,
/// `migrate`, then `query-migrate` until it ends (each progress given to
/// `on_progress`). The summary, or the reason it failed.
pub fn migrate(
    c: &mut Client,
    req: &MigrateRequest,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Summary, ControlError> {
    for (cmd, args) in settings(req)? {
        c.execute(cmd, args)?;
    }
    let mut args = json!({ "uri": req.uri });
    if req.overwrite {
        args["x-overwrite"] = json!(true);
    }
    c.execute("migrate", args)?;
    let mut last: Option<Progress> = None;
    loop {
        // Waiting for an event is the pause between two queries.
        c.pause(POLL)?;
        let v = c.execute("query-migrate", json!({}))?;
        if let Some(p) = v.get("x-vmm-progress").cloned() {
            let p: Progress = decode(p, "query-migrate")?;
            if last.as_ref() != Some(&p) {
                on_progress(&p);
                last = Some(p);
            }
        }
        match v.get("status").and_then(Value::as_str) {
            Some("completed") => {
                let sum = v.get("x-vmm-summary").cloned().unwrap_or_default();
                return decode(sum, "query-migrate");
            }
            Some("failed") => {
                let why = v
                    .get("error-desc")
                    .and_then(Value::as_str)
                    .unwrap_or("failed");
                return Err(ControlError::Remote(why.to_string()));
            }
            Some("cancelled") => {
                return Err(ControlError::Remote("the migration was cancelled".into()));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(channels: u32, compress: Option<&str>) -> MigrateRequest {
        MigrateRequest {
            uri: "tcp:h:1".into(),
            downtime_limit: 300,
            max_bandwidth: Some(1 << 20),
            channels,
            compress: compress.map(String::from),
            overwrite: false,
            tls: None,
        }
    }

    #[test]
    fn migrate_options_become_the_references_parameters() {
        let s = settings(&req(4, Some("zstd:3"))).unwrap();
        assert_eq!(s[0].1["capabilities"][0]["state"], true);
        let p = &s[1].1;
        assert_eq!(
            (
                p["multifd-channels"].as_u64(),
                p["multifd-compression"].as_str(),
                p["multifd-zstd-level"].as_u64()
            ),
            (Some(4), Some("zstd"), Some(3))
        );
        assert_eq!(p["max-bandwidth"], 1 << 20);
        let s = settings(&req(0, None)).unwrap();
        assert_eq!(s[0].1["capabilities"][0]["state"], false);
        assert!(s[1].1.get("multifd-channels").is_none());
        assert_eq!(
            settings(&req(0, Some("zstd"))).unwrap()[1].1["multifd-compression"],
            "zstd"
        );
        assert!(settings(&req(2, Some("lz4"))).is_err());
    }
}
