//! `vmm tls gen DIR`: throw-away credentials for a rehearsal of a TLS
//! migration (a CA, a destination and a source certificate in the
//! reference's x509 layout, or a pre-shared key file). For production use
//! your own PKI: the CA key is written beside the certificates.

use std::path::PathBuf;
use std::process::ExitCode;

/// `vmm tls ...`
#[derive(clap::Subcommand, Debug)]
pub enum TlsCommand {
    /// Write a throw-away CA, `server-cert.pem`/`server-key.pem` (the
    /// destination) and `client-cert.pem`/`client-key.pem` (the source)
    /// into DIR, in the reference's `tls-creds-x509` layout; with `--psk`
    /// a `keys.psk` file instead. Existing files are never replaced.
    Gen {
        /// The directory (created if missing).
        dir: PathBuf,
        /// A name the destination's certificate carries besides
        /// localhost, 127.0.0.1 and ::1 (a DNS name or an IP address);
        /// repeatable.
        #[arg(long = "name", value_name = "HOST")]
        names: Vec<String>,
        /// Write DIR/keys.psk (`identity:hexkey`, 256 random bits) instead.
        #[arg(long)]
        psk: bool,
        /// The identity of the pre-shared key.
        #[arg(long, default_value = "qemu", requires = "psk")]
        identity: String,
    },
}

/// Runs `vmm tls`.
pub fn main(cmd: &TlsCommand) -> ExitCode {
    let TlsCommand::Gen {
        dir,
        names,
        psk,
        identity,
    } = cmd;
    let r = if *psk {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))
            .and_then(|()| migration::secure::rehearsal::psk_file(&dir.join("keys.psk"), identity))
            .map(|()| {
                println!("wrote {}/keys.psk (identity {identity})", dir.display());
                println!(
                    "use: --tls-creds psk:{}/keys.psk on both sides",
                    dir.display()
                );
            })
    } else {
        migration::secure::rehearsal::generate(dir, names).map(|g| {
            println!(
                "wrote {} in {} (a rehearsal CA: not for production)",
                g.files.join(", "),
                dir.display()
            );
            println!(
                "destination: vmm run --incoming tcp:HOST:PORT --tls-creds {}",
                dir.display()
            );
            println!(
                "source:      vmm migrate --control SOCK tcp:HOST:PORT --tls-creds {}",
                dir.display()
            );
            println!(
                "subjects: destination `{}`, source `{}` (for --tls-authz)",
                g.server_subject, g.client_subject
            );
        })
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmm tls gen: {e}");
            ExitCode::FAILURE
        }
    }
}
