//! NBD server and target addresses: the reference's `SocketAddress`
//! (flat, or the legacy `{"type", "data"}` form of `nbd-server-start`) and
//! NBD URIs (`nbd+unix:///EXPORT?socket=PATH`, `nbd://HOST:PORT/EXPORT`,
//! the older `nbd:unix:PATH:exportname=EXPORT`, `nbd:HOST:PORT[:exportname=EXPORT]`).

use std::io;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use migration::secure::Sock;
use serde_json::Value;

/// Where an NBD server listens or a client connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    Unix(PathBuf),
    Inet { host: String, port: u16 },
}

/// Longest host name or socket path taken from a peer's arguments.
const MAX_TEXT: usize = 4096;

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
            Addr::Inet { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

fn text(v: &Value, key: &str) -> Result<String, String> {
    let s = match &v[key] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Null => return Err(format!("Parameter '{key}' is missing")),
        _ => {
            return Err(format!(
                "Invalid parameter type for '{key}', expected: string"
            ));
        }
    };
    if s.is_empty() || s.len() > MAX_TEXT {
        return Err(format!(
            "Parameter '{key}' expects a non-empty string of at most {MAX_TEXT} bytes"
        ));
    }
    Ok(s)
}

fn port(s: &str) -> Result<u16, String> {
    s.parse()
        .map_err(|_| format!("Parameter 'port' expects a port number, not '{s}'"))
}

impl Addr {
    /// A QMP `SocketAddress`: `{"type": "unix", "path"}` or `{"type":
    /// "inet", "host", "port"}`, flat or with the legacy `data` member.
    pub fn from_qmp(v: &Value) -> Result<Addr, String> {
        let body = if v.get("data").is_some() {
            &v["data"]
        } else {
            v
        };
        match v["type"].as_str() {
            Some("unix") => Ok(Addr::Unix(PathBuf::from(text(body, "path")?))),
            Some("inet") => Ok(Addr::Inet {
                host: text(body, "host")?,
                port: port(&text(body, "port")?)?,
            }),
            Some(other) => Err(format!(
                "Parameter 'type' does not accept value '{other}' (unix or inet)"
            )),
            None => Err("Parameter 'type' is missing".into()),
        }
    }

    /// An NBD URI: the address and the export name.
    pub fn from_uri(uri: &str) -> Result<(Addr, String), String> {
        let bad = || {
            format!(
                "'{uri}' is not an NBD URI (nbd+unix:///EXPORT?socket=PATH, nbd://HOST:PORT/EXPORT, nbd:unix:PATH:exportname=EXPORT)"
            )
        };
        if uri.len() > MAX_TEXT {
            return Err(bad());
        }
        if let Some(rest) = uri.strip_prefix("nbd+unix://") {
            let (path, query) = rest.split_once('?').ok_or_else(bad)?;
            let export = path.trim_start_matches('/').to_string();
            let socket = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("socket="))
                .filter(|s| !s.is_empty())
                .ok_or_else(bad)?;
            return Ok((Addr::Unix(socket.into()), export));
        }
        if let Some(rest) = uri.strip_prefix("nbd://") {
            let (hostport, export) = rest.split_once('/').unwrap_or((rest, ""));
            let (host, p) = hostport.rsplit_once(':').unwrap_or((hostport, "10809"));
            if host.is_empty() {
                return Err(bad());
            }
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            return Ok((
                Addr::Inet {
                    host,
                    port: port(p)?,
                },
                export.to_string(),
            ));
        }
        if let Some(rest) = uri.strip_prefix("nbd:") {
            let (addr, export) = match rest.split_once(":exportname=") {
                Some((a, e)) => (a, e.to_string()),
                None => (rest, String::new()),
            };
            if let Some(path) = addr.strip_prefix("unix:") {
                if path.is_empty() {
                    return Err(bad());
                }
                return Ok((Addr::Unix(path.into()), export));
            }
            let (host, p) = addr.rsplit_once(':').ok_or_else(bad)?;
            if host.is_empty() {
                return Err(bad());
            }
            return Ok((
                Addr::Inet {
                    host: host.to_string(),
                    port: port(p)?,
                },
                export,
            ));
        }
        Err(bad())
    }

    /// Connects, with `timeout` on the connect and on every read and write.
    pub fn connect(&self, timeout: Duration) -> io::Result<Sock> {
        match self {
            Addr::Unix(p) => {
                let s = UnixStream::connect(p)?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                Ok(Sock::Unix(s))
            }
            Addr::Inet { host, port } => {
                use std::net::ToSocketAddrs;
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                for a in (host.as_str(), *port).to_socket_addrs()? {
                    match TcpStream::connect_timeout(&a, timeout) {
                        Ok(s) => {
                            s.set_read_timeout(Some(timeout))?;
                            s.set_write_timeout(Some(timeout))?;
                            s.set_nodelay(true)?;
                            return Ok(Sock::Tcp(s));
                        }
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }

    /// The name a server's certificate must have by default: the host, or
    /// `localhost` for a unix socket.
    pub fn host(&self) -> &str {
        match self {
            Addr::Unix(_) => "localhost",
            Addr::Inet { host, .. } => host,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn qmp_addresses_flat_and_legacy() {
        assert_eq!(
            Addr::from_qmp(&json!({"type": "unix", "path": "/tmp/n.sock"})),
            Ok(Addr::Unix("/tmp/n.sock".into()))
        );
        assert_eq!(
            Addr::from_qmp(
                &json!({"type": "inet", "data": {"host": "127.0.0.1", "port": "10809"}})
            ),
            Ok(Addr::Inet {
                host: "127.0.0.1".into(),
                port: 10809
            })
        );
        assert!(Addr::from_qmp(&json!({"type": "vsock"})).is_err());
        assert!(Addr::from_qmp(&json!({"type": "inet", "host": "h", "port": "x"})).is_err());
        assert!(Addr::from_qmp(&json!({"type": "unix", "path": ""})).is_err());
    }

    #[test]
    fn nbd_uris() {
        assert_eq!(
            Addr::from_uri("nbd+unix:///disk0?socket=/run/n.sock"),
            Ok((Addr::Unix("/run/n.sock".into()), "disk0".into()))
        );
        assert_eq!(
            Addr::from_uri("nbd://10.0.0.2:10810/disk0"),
            Ok((
                Addr::Inet {
                    host: "10.0.0.2".into(),
                    port: 10810
                },
                "disk0".into()
            ))
        );
        assert_eq!(
            Addr::from_uri("nbd:unix:/run/n.sock:exportname=d"),
            Ok((Addr::Unix("/run/n.sock".into()), "d".into()))
        );
        assert_eq!(
            Addr::from_uri("nbd:localhost:10809:exportname=d"),
            Ok((
                Addr::Inet {
                    host: "localhost".into(),
                    port: 10809
                },
                "d".into()
            ))
        );
        for bad in [
            "file:/x",
            "nbd+unix:///d",
            "nbd://:1/d",
            "nbd:unix:",
            "nbd:host:notaport",
        ] {
            assert!(Addr::from_uri(bad).is_err(), "{bad}");
        }
    }
}
