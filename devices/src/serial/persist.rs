//! [`Persist`] for the 16550A UART: [`SerialDeviceState`] ⇄ the generated
//! [`IsaSerialState`] (section `serial`).
//!
//! Mapping: `divider` = divisor latch high:low; `ier iir lcr mcr lsr msr scr`
//! one to one; `rx_len`/`rx_fifo` = the receive FIFO (at most
//! [`RX_FIFO_LEN`] bytes, the 16550A's FIFO and the declaration's `max`).
//! `rbr` and `fcr` are not modelled by vm-superio (reading RBR pops the FIFO,
//! FCR writes are ignored): saved as 0, ignored on load. A version-2 stream
//! (no FIFO fields) restores an empty FIFO.

use super::{Serial, SerialDeviceState};
use crate::generated::vmstate::{ISA_SERIAL, IsaSerialState};
use crate::persist::{self, Persist, PersistError, Section};
use compat_runtime::{Count, VmStateDesc};

/// Bytes the receive FIFO holds: the `max` of `rx_fifo` in the `serial`
/// declaration (16, a 16550A's FIFO).
pub const RX_FIFO_LEN: usize = rx_fifo_max();
const _: () = assert!(RX_FIFO_LEN > 0, "`serial` VMState lost its `rx_fifo` field");

const fn rx_fifo_max() -> usize {
    const fn is(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }
    let f = ISA_SERIAL.fields;
    let mut i = 0;
    while i < f.len() {
        if let Count::Field { max, .. } = f[i].count
            && is(f[i].name, "rx_fifo")
        {
            return max as usize;
        }
        i += 1;
    }
    0
}

/// IER bits a 16550A has.
const IER_VALID: u8 = 0x0f;
/// LSR overrun error: set when a save had to drop receive bytes.
const LSR_OE: u8 = 0x02;

fn to_vmstate(s: &SerialDeviceState) -> IsaSerialState {
    let mut lsr = s.line_status;
    let mut rx = s.in_buffer.clone();
    if rx.len() > RX_FIFO_LEN {
        // Only reachable with > 16 bytes written in loopback mode: a real
        // 16550A would have overrun, so do what it does.
        tracing::warn!(
            "serial: {} receive bytes beyond the 16-byte FIFO dropped on save (overrun)",
            rx.len() - RX_FIFO_LEN
        );
        rx.truncate(RX_FIFO_LEN);
        lsr |= LSR_OE;
    }
    IsaSerialState {
        divider: u16::from_le_bytes([s.baud_divisor_low, s.baud_divisor_high]),
        rbr: 0,
        ier: s.interrupt_enable,
        iir: s.interrupt_identification,
        lcr: s.line_control,
        mcr: s.modem_control,
        lsr,
        msr: s.modem_status,
        scr: s.scratch,
        fcr: 0,
        rx_len: rx.len() as u8,
        rx_fifo: rx,
    }
}

fn from_vmstate(v: &IsaSerialState) -> Result<SerialDeviceState, PersistError> {
    let dev = ISA_SERIAL.name;
    if v.ier & !IER_VALID != 0 {
        return Err(PersistError::BadValue {
            device: dev.into(),
            field: "ier".into(),
            why: format!("{:#04x} sets bits a 16550A does not have", v.ier),
        });
    }
    if usize::from(v.rx_len) != v.rx_fifo.len() {
        return Err(persist::mismatch(
            dev,
            "rx_len",
            v.rx_len,
            format!("{} bytes in rx_fifo", v.rx_fifo.len()),
        ));
    }
    let [baud_divisor_low, baud_divisor_high] = v.divider.to_le_bytes();
    Ok(SerialDeviceState {
        baud_divisor_low,
        baud_divisor_high,
        interrupt_enable: v.ier,
        interrupt_identification: v.iir,
        line_control: v.lcr,
        line_status: v.lsr,
        modem_control: v.mcr,
        modem_status: v.msr,
        scratch: v.scr,
        in_buffer: v.rx_fifo.clone(),
    })
}

impl Persist for Serial {
    fn descriptors(&self) -> Vec<&'static VmStateDesc> {
        vec![&ISA_SERIAL]
    }

    fn gate(&self, _property: &str) -> Option<bool> {
        None
    }

    fn save_sections(&self) -> Result<Vec<Section>, PersistError> {
        Ok(vec![persist::encode(&to_vmstate(&self.state()), |p| {
            self.gate(p)
        })?])
    }

    fn restore_sections(&mut self, sections: &[Section]) -> Result<(), PersistError> {
        let picked = persist::pick(&self.descriptors(), sections)?;
        let v: IsaSerialState = persist::decode(picked[0], |p| self.gate(p))?;
        let st = from_vmstate(&v)?;
        Serial::restore(self, &st).map_err(|e| PersistError::BadValue {
            device: ISA_SERIAL.name.into(),
            field: "rx_fifo".into(),
            why: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusDevice;
    use crate::persist::testing::{hostile_bytes, with_version};
    use vmm_sys_util::eventfd::EventFd;

    fn uart() -> Serial {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        Serial::new(Box::new(std::io::sink()), &evt).unwrap()
    }

    fn regs(s: &mut Serial) -> Vec<u8> {
        // Non-destructive reads only (RBR and IIR reads change state).
        [1u64, 3, 4, 5, 6, 7]
            .iter()
            .map(|&o| {
                let mut b = [0];
                s.read(o, &mut b);
                b[0]
            })
            .collect()
    }

    /// A UART with divisor 0x0c03, 8N1, IER/MCR/SCR set and 3 bytes pending.
    fn busy() -> Serial {
        let mut s = uart();
        s.write(3, &[0x80]); // DLAB
        s.write(0, &[0x03]);
        s.write(1, &[0x0c]);
        s.write(3, &[0x03]);
        s.write(1, &[0x05]);
        s.write(4, &[0x0b]);
        s.write(7, &[0x5a]);
        assert_eq!(s.enqueue_input(b"abc"), 3);
        s
    }

    #[test]
    fn roundtrip_same_state_and_registers() {
        let mut a = busy();
        let saved = a.save_sections().unwrap();
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].name, "serial");
        assert_eq!(saved[0].version_id, 3);
        let mut b = uart();
        b.restore_sections(&saved).unwrap();
        assert_eq!(a.state(), b.state());
        assert_eq!(regs(&mut a), regs(&mut b));
        // divisor latch
        for s in [&mut a, &mut b] {
            s.write(3, &[0x83]);
        }
        let (mut x, mut y) = ([0u8; 2], [0u8; 2]);
        a.read(0, &mut x[..1]);
        a.read(1, &mut x[1..]);
        b.read(0, &mut y[..1]);
        b.read(1, &mut y[1..]);
        assert_eq!(x, [0x03, 0x0c]);
        assert_eq!(x, y);
        for s in [&mut a, &mut b] {
            s.write(3, &[0x03]);
        }
        // the pending input drains the same way
        for _ in 0..3 {
            let (mut x, mut y) = ([0u8], [0u8]);
            a.read(0, &mut x);
            b.read(0, &mut y);
            assert_eq!(x, y);
        }
        assert_eq!(a.state(), b.state());
        assert_eq!(b.save_sections().unwrap(), a.save_sections().unwrap());
    }

    #[test]
    fn host_input_is_capped_at_the_fifo() {
        let mut s = uart();
        assert_eq!(s.enqueue_input(&[7; 40]), RX_FIFO_LEN);
        assert_eq!(RX_FIFO_LEN, 16);
        let mut t = uart();
        t.restore_sections(&s.save_sections().unwrap()).unwrap();
        assert_eq!(t.state().in_buffer, vec![7; 16]);
    }

    #[test]
    fn loopback_overrun_is_dropped_with_oe() {
        let mut s = uart();
        s.write(4, &[0x10]); // loopback
        for i in 0..20u8 {
            s.write(0, &[i]);
        }
        let mut t = uart();
        t.restore_sections(&s.save_sections().unwrap()).unwrap();
        assert_eq!(t.state().in_buffer, (0..16).collect::<Vec<u8>>());
        assert_ne!(t.state().line_status & LSR_OE, 0);
    }

    #[test]
    fn versions_outside_the_window_are_refused() {
        let saved = busy().save_sections().unwrap();
        let e = uart()
            .restore_sections(&[with_version(&saved[0], 4)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("serial") && e.contains('4') && e.contains('3'),
            "{e}"
        );
        let e = uart()
            .restore_sections(&[with_version(&saved[0], 1)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("serial") && e.contains('1') && e.contains('2'),
            "{e}"
        );
        // header and bytes must agree
        let mut s = saved[0].clone();
        s.version_id = 2;
        assert!(matches!(
            uart().restore_sections(&[s]),
            Err(PersistError::VersionMismatch { .. })
        ));
    }

    #[test]
    fn version_2_stream_restores_an_empty_fifo() {
        let v = IsaSerialState {
            divider: 1,
            ier: 1,
            lcr: 3,
            lsr: 0x60,
            ..Default::default()
        };
        // A version-2 section: the fields without `since = 3`.
        let mut data = vec![6];
        data.extend_from_slice(b"serial");
        data.extend_from_slice(&2u32.to_be_bytes());
        data.extend_from_slice(&v.divider.to_be_bytes());
        data.extend_from_slice(&[v.rbr, v.ier, v.iir, v.lcr, v.mcr, v.lsr, v.msr, v.scr, 0]);
        let mut s = busy();
        s.restore_sections(&[Section {
            name: "serial".into(),
            version_id: 2,
            data,
        }])
        .unwrap();
        let st = s.state();
        assert!(st.in_buffer.is_empty());
        assert_eq!((st.baud_divisor_low, st.line_control), (1, 3));
    }

    #[test]
    fn wrong_sections_are_refused_by_name() {
        let saved = busy().save_sections().unwrap();
        let mut other = saved[0].clone();
        other.name = "virtio-blk".into();
        let e = uart().restore_sections(&[other]).unwrap_err().to_string();
        assert!(e.contains("virtio-blk"), "{e}");
        let e = uart().restore_sections(&[]).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
        let twice = [saved[0].clone(), saved[0].clone()];
        assert!(matches!(
            uart().restore_sections(&twice),
            Err(PersistError::DuplicateSection { .. })
        ));
        // an instance suffix is fine
        let mut inst = saved[0].clone();
        inst.name = "serial/0".into();
        uart().restore_sections(&[inst]).unwrap();
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let saved = busy().save_sections().unwrap();
        let (t, _) = hostile_bytes(&saved, uart);
        assert_eq!(t, saved[0].data.len());
        // a bad IER value is refused by name
        let mut v = to_vmstate(&busy().state());
        v.ier = 0xff;
        let s = persist::encode(&v, |_| None).unwrap();
        let e = uart().restore_sections(&[s]).unwrap_err().to_string();
        assert!(e.contains("ier"), "{e}");
    }
}
