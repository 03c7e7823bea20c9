//! Why `vmm run` failed, and the exit code each reason gives (2: bad
//! input, 1: everything else).

use crate::builder::BuildError;
use crate::builder::config::ConfigError;
use crate::control::ControlError;
use crate::release::persona::PersonaError;
use miette::Diagnostic;
use migration::incoming::IncomingError;
use migration::transport::TransportError;
use std::path::PathBuf;

/// Why `vmm run` failed.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum RunError {
    /// Bad `-m`.
    #[error("invalid memory size `{0}`")]
    #[diagnostic(
        code(vmm::cli::run::memory),
        help("use a size like 256M, 1G or 65536K")
    )]
    Memory(String),
    /// Bad `--smp`.
    #[error("invalid --smp `{0}`")]
    #[diagnostic(code(vmm::cli::run::smp), help("use a number of vCPUs, e.g. --smp 2"))]
    Smp(String),
    /// Bad `--serial`.
    #[error("invalid --serial `{0}`")]
    #[diagnostic(code(vmm::cli::run::serial), help("use stdio or file:PATH"))]
    Serial(String),
    /// Machine type, overrides, drives.
    #[error(transparent)]
    #[diagnostic(code(vmm::cli::run::config))]
    Config(#[from] ConfigError),
    /// A `--drive` image does not exist.
    #[error("disk image {0} does not exist")]
    #[diagnostic(
        code(vmm::cli::run::drive),
        help("create it first, e.g. truncate -s 64M IMAGE")
    )]
    MissingImage(PathBuf),
    /// `--kernel` unreadable.
    #[error("cannot read kernel {path}: {source}")]
    #[diagnostic(code(vmm::cli::run::kernel))]
    Kernel {
        /// Path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// Building the VM failed.
    #[error(transparent)]
    #[diagnostic(code(vmm::cli::run::build))]
    Build(#[from] BuildError),
    /// The guest crashed.
    #[error("guest crashed on vCPU {vcpu}: {exit}\n  registers: {regs}")]
    #[diagnostic(code(vmm::cli::run::guest_crash))]
    GuestCrash {
        /// vCPU.
        vcpu: u8,
        /// Exit description.
        exit: String,
        /// Registers.
        regs: String,
    },
    /// Unusable `--tls-creds`.
    #[error("{0}")]
    #[diagnostic(code(vmm::cli::run::tls))]
    Tls(String),
    /// A bad `--qmp` option.
    #[error("{0}")]
    #[diagnostic(code(vmm::cli::run::qmp))]
    Qmp(String),
    /// A bad `--incoming` URI or listening failed.
    #[error("--incoming: {0}")]
    #[diagnostic(code(vmm::cli::run::incoming_uri))]
    IncomingUri(TransportError),
    /// The incoming migration failed; no guest was started.
    #[error("incoming migration failed: {0}")]
    #[diagnostic(
        code(vmm::cli::run::incoming),
        help("nothing was started on this destination")
    )]
    Incoming(IncomingError),
    /// The control socket.
    #[error(transparent)]
    #[diagnostic(code(vmm::cli::run::control))]
    Control(#[from] ControlError),
    /// `--as-release`, or the machine type's lifecycle.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Persona(Box<PersonaError>),
    /// All vCPU threads ended without a power-off.
    #[error("all vCPUs stopped without a power-off")]
    #[diagnostic(code(vmm::cli::run::vcpus_gone))]
    VcpusGone,
}

impl RunError {
    /// The exit status: 2 for bad command-line input (as the reference's
    /// usage errors), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Memory(_)
            | RunError::Smp(_)
            | RunError::Serial(_)
            | RunError::Config(_)
            | RunError::Qmp(_)
            | RunError::Tls(_)
            | RunError::MissingImage(_) => 2,
            RunError::Persona(p) => match **p {
                PersonaError::Config(_) | PersonaError::Override(_) => 2,
                _ => 1,
            },
            _ => 1,
        }
    }
}

impl From<PersonaError> for RunError {
    fn from(e: PersonaError) -> Self {
        RunError::Persona(Box::new(e))
    }
}

impl From<IncomingError> for RunError {
    fn from(e: IncomingError) -> Self {
        // Not a `source`: the message already says it, once.
        RunError::Incoming(e)
    }
}
