//! 16550A UART (vm-superio) on an I/O port, output to stdout or a file,
//! interrupt through an `EventFd` the VMM registers as a KVM irqfd.
//!
//! Files: `config.rs` (what the machine type decides), `device.rs` (the bus
//! device), `state.rs` (the migratable register state), `persist.rs`
//! (that state ⇄ the generated VMState section `serial`).

mod config;
mod device;
mod persist;
mod state;

pub use config::{SerialConfig, SerialOutput};
pub use device::{Serial, SerialError};
pub use persist::RX_FIFO_LEN;
pub use state::SerialDeviceState;
