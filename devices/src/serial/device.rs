use std::io::{self, LineWriter, Write};

use vm_superio::Trigger;
use vm_superio::serial::NoEvents;
use vmm_sys_util::eventfd::EventFd;

use super::{SerialDeviceState, SerialOutput};
use crate::bus::BusDevice;

/// Errors creating or restoring the UART.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// The output file could not be created.
    #[error("cannot open serial output file {path}: {source}")]
    OpenOutput {
        /// The path given in `--serial file:PATH`.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// The interrupt eventfd could not be duplicated.
    #[error("serial interrupt eventfd: {0}")]
    EventFd(io::Error),
    /// Saved state is not acceptable to the UART model.
    #[error("invalid serial state")]
    BadState,
}

/// Raises the UART interrupt by signalling an eventfd (a KVM irqfd).
pub struct IrqTrigger(EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

type Out = LineWriter<Box<dyn Write + Send>>;

/// The 16550 UART bus device (8 ports from `SerialConfig::iobase`).
pub struct Serial {
    inner: vm_superio::Serial<IrqTrigger, NoEvents, Out>,
    irq: EventFd,
    write_failed: bool,
}

impl Serial {
    /// Opens the output sink; `truncate` on first boot, append after a reset.
    pub fn open_output(
        output: &SerialOutput,
        truncate: bool,
    ) -> Result<Box<dyn Write + Send>, SerialError> {
        Ok(match output {
            SerialOutput::Stdio => Box::new(io::stdout()),
            SerialOutput::File(p) => {
                let mut o = std::fs::OpenOptions::new();
                o.create(true);
                if truncate {
                    o.write(true).truncate(true)
                } else {
                    o.append(true)
                };
                Box::new(o.open(p).map_err(|source| SerialError::OpenOutput {
                    path: p.display().to_string(),
                    source,
                })?)
            }
        })
    }

    /// Creates the UART writing to `out`; `irq` is the eventfd the VMM
    /// registered as the irqfd for the config's `irq`.
    pub fn new(out: Box<dyn Write + Send>, irq: &EventFd) -> Result<Self, SerialError> {
        let trig = IrqTrigger(irq.try_clone().map_err(SerialError::EventFd)?);
        Ok(Self {
            inner: vm_superio::Serial::new(trig, LineWriter::new(out)),
            irq: irq.try_clone().map_err(SerialError::EventFd)?,
            write_failed: false,
        })
    }

    /// The UART registers as plain data.
    pub fn state(&self) -> SerialDeviceState {
        SerialDeviceState::from(&self.inner.state())
    }

    /// Replaces the UART registers (the output sink is kept).
    pub fn restore(&mut self, state: &SerialDeviceState) -> Result<(), SerialError> {
        let trig = IrqTrigger(self.irq.try_clone().map_err(SerialError::EventFd)?);
        let out = std::mem::replace(
            self.inner.writer_mut(),
            LineWriter::new(Box::new(io::sink())),
        );
        self.inner = vm_superio::Serial::from_state(&state.into(), trig, NoEvents, out)
            .map_err(|_| SerialError::BadState)?;
        Ok(())
    }

    /// Queues host input for the guest (raises the receive interrupt if the
    /// guest enabled it); returns how many bytes fit in the FIFO (a 16550A's
    /// 16 bytes, [`RX_FIFO_LEN`](super::RX_FIFO_LEN), what the VMState carries).
    pub fn enqueue_input(&mut self, input: &[u8]) -> usize {
        let queued = self.inner.state().in_buffer.len();
        let room = super::RX_FIFO_LEN
            .saturating_sub(queued)
            .min(self.inner.fifo_capacity())
            .min(input.len());
        if room == 0 {
            return 0;
        }
        self.inner.enqueue_raw_bytes(&input[..room]).unwrap_or(0)
    }

    /// Flushes buffered output (a partial last line).
    pub fn flush(&mut self) {
        let _ = self.inner.writer_mut().flush();
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let (Some(b), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *b = self.inner.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(&b), Ok(off)) = (data.first(), u8::try_from(offset))
            && let Err(e) = self.inner.write(off, b)
            && !self.write_failed
        {
            // Log once: a closed stdout would otherwise log every byte.
            tracing::warn!("serial output failed (further failures not logged): {e:?}");
            self.write_failed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_go_to_file_and_state_roundtrips() {
        let dir = std::env::temp_dir().join(format!("serial-test-{}", std::process::id()));
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let out = Serial::open_output(&SerialOutput::File(dir.clone()), true).unwrap();
        let mut s = Serial::new(out, &evt).unwrap();
        for b in b"hi\n" {
            s.write(0, &[*b]);
        }
        s.write(7, &[0x5a]);
        let st = s.state();
        assert_eq!(st.scratch, 0x5a);
        s.restore(&st).unwrap();
        let mut b = [0];
        s.read(7, &mut b);
        assert_eq!(b[0], 0x5a);
        s.flush();
        assert_eq!(std::fs::read(&dir).unwrap(), b"hi\n");
        // Host input reaches the guest's receive buffer.
        assert_eq!(s.enqueue_input(b"ok"), 2);
        let mut lsr = [0];
        s.read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut rbr = [0];
        s.read(0, &mut rbr);
        assert_eq!(rbr[0], b'o');
        let _ = std::fs::remove_file(dir);
    }
}
