//! 16550A UART (vm-superio) on an I/O port, output to stdout or a file,
//! interrupt through an `EventFd` the VMM registers as a KVM irqfd.
//!
//! Files: `config.rs` (what the machine type decides), `device.rs` (the bus
//! device), `state.rs` (the migratable register state).

mod config;
mod device;
mod state;

pub use config::{SerialConfig, SerialOutput};
pub use device::{Serial, SerialError};
pub use state::SerialDeviceState;
