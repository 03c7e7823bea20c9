use std::path::PathBuf;

/// Where the guest's serial output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialOutput {
    /// The VMM's standard output (line-buffered).
    Stdio,
    /// A file, created or truncated.
    File(PathBuf),
}

/// Configuration of one 16550 UART; `iobase`/`irq` come from the machine
/// type's `isa-serial` properties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialConfig {
    /// First of the 8 I/O ports.
    pub iobase: u16,
    /// GSI of the UART interrupt.
    pub irq: u32,
    /// Output sink.
    pub output: SerialOutput,
}
