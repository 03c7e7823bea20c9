//! The bytes of a vCPU record: the runtime's [`VcpuState`] (registers,
//! segment and control registers, FPU, XSAVE, XCRs, MSRs, LAPIC, MP state,
//! events, debug registers), field by field, little-endian, behind a codec
//! version. Decoding treats the bytes as hostile like the rest of the stream.

use crate::vstate::vcpu::VcpuState;
use kvm_bindings::{
    kvm_debugregs, kvm_dtable, kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_segment, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};

/// Version of this encoding (bumped on any change below).
pub const VCPU_CODEC_VERSION: u32 = 1;
/// Most MSRs one record may carry.
pub const MAX_MSRS: u32 = 1024;

/// A vCPU record that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VcpuCodecError {
    #[error("vCPU record truncated at byte {0}")]
    Truncated(usize),
    #[error(
        "vCPU record codec version {0} is not supported (this build reads {VCPU_CODEC_VERSION})"
    )]
    Version(u32),
    #[error("vCPU record has {0} MSRs (at most {MAX_MSRS})")]
    TooManyMsrs(u32),
    #[error("vCPU record has {0} trailing bytes")]
    Trailing(usize),
}

struct W(Vec<u8>);

impl W {
    fn b(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.b(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.b(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.b(&v.to_le_bytes());
    }
}

struct R<'a> {
    b: &'a [u8],
    at: usize,
}

impl R<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], VcpuCodecError> {
        let s = self
            .b
            .get(self.at..self.at + N)
            .ok_or(VcpuCodecError::Truncated(self.at))?;
        self.at += N;
        let mut out = [0; N];
        out.copy_from_slice(s);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, VcpuCodecError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, VcpuCodecError> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, VcpuCodecError> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, VcpuCodecError> {
        self.take().map(u64::from_le_bytes)
    }
}

fn put_seg(w: &mut W, s: &kvm_segment) {
    w.u64(s.base);
    w.u32(s.limit);
    w.u16(s.selector);
    for v in [
        s.type_, s.present, s.dpl, s.db, s.s, s.l, s.g, s.avl, s.unusable,
    ] {
        w.u8(v);
    }
}

fn get_seg(r: &mut R) -> Result<kvm_segment, VcpuCodecError> {
    Ok(kvm_segment {
        base: r.u64()?,
        limit: r.u32()?,
        selector: r.u16()?,
        type_: r.u8()?,
        present: r.u8()?,
        dpl: r.u8()?,
        db: r.u8()?,
        s: r.u8()?,
        l: r.u8()?,
        g: r.u8()?,
        avl: r.u8()?,
        unusable: r.u8()?,
        padding: 0,
    })
}

fn put_dt(w: &mut W, d: &kvm_dtable) {
    w.u64(d.base);
    w.u16(d.limit);
}

fn get_dt(r: &mut R) -> Result<kvm_dtable, VcpuCodecError> {
    Ok(kvm_dtable {
        base: r.u64()?,
        limit: r.u16()?,
        padding: [0; 3],
    })
}

/// Encodes one vCPU's state.
pub fn encode_vcpu(s: &VcpuState) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(8192));
    w.u32(VCPU_CODEC_VERSION);
    let g = &s.regs;
    for v in [
        g.rax, g.rbx, g.rcx, g.rdx, g.rsi, g.rdi, g.rsp, g.rbp, g.r8, g.r9, g.r10, g.r11, g.r12,
        g.r13, g.r14, g.r15, g.rip, g.rflags,
    ] {
        w.u64(v);
    }
    let sr = &s.sregs;
    for seg in [
        &sr.cs, &sr.ds, &sr.es, &sr.fs, &sr.gs, &sr.ss, &sr.tr, &sr.ldt,
    ] {
        put_seg(&mut w, seg);
    }
    put_dt(&mut w, &sr.gdt);
    put_dt(&mut w, &sr.idt);
    for v in [
        sr.cr0,
        sr.cr2,
        sr.cr3,
        sr.cr4,
        sr.cr8,
        sr.efer,
        sr.apic_base,
    ] {
        w.u64(v);
    }
    sr.interrupt_bitmap.iter().for_each(|v| w.u64(*v));
    let f = &s.fpu;
    f.fpr.iter().for_each(|r| w.b(r));
    w.u16(f.fcw);
    w.u16(f.fsw);
    w.u8(f.ftwx);
    w.u16(f.last_opcode);
    w.u64(f.last_ip);
    w.u64(f.last_dp);
    f.xmm.iter().for_each(|r| w.b(r));
    w.u32(f.mxcsr);
    s.xsave.region.iter().for_each(|v| w.u32(*v));
    w.u32(s.xcrs.nr_xcrs);
    w.u32(s.xcrs.flags);
    for x in &s.xcrs.xcrs {
        w.u32(x.xcr);
        w.u64(x.value);
    }
    w.u32(s.msrs.len() as u32);
    for m in &s.msrs {
        w.u32(m.index);
        w.u64(m.data);
    }
    s.lapic.regs.iter().for_each(|c| w.u8(*c as u8));
    w.u32(s.mp_state.mp_state);
    let e = &s.events;
    let x = &e.exception;
    for v in [x.injected, x.nr, x.has_error_code, x.pending] {
        w.u8(v);
    }
    w.u32(x.error_code);
    let i = &e.interrupt;
    for v in [i.injected, i.nr, i.soft, i.shadow] {
        w.u8(v);
    }
    let n = &e.nmi;
    for v in [n.injected, n.pending, n.masked] {
        w.u8(v);
    }
    w.u32(e.sipi_vector);
    w.u32(e.flags);
    let m = &e.smi;
    for v in [m.smm, m.pending, m.smm_inside_nmi, m.latched_init] {
        w.u8(v);
    }
    w.u8(e.triple_fault.pending);
    w.u8(e.exception_has_payload);
    w.u64(e.exception_payload);
    let d = &s.debug_regs;
    d.db.iter().for_each(|v| w.u64(*v));
    w.u64(d.dr6);
    w.u64(d.dr7);
    w.u64(d.flags);
    w.0
}

/// Decodes one vCPU's state.
pub fn decode_vcpu(bytes: &[u8]) -> Result<VcpuState, VcpuCodecError> {
    let mut r = R { b: bytes, at: 0 };
    let version = r.u32()?;
    if version != VCPU_CODEC_VERSION {
        return Err(VcpuCodecError::Version(version));
    }
    let mut g = [0u64; 18];
    for v in &mut g {
        *v = r.u64()?;
    }
    let regs = kvm_regs {
        rax: g[0],
        rbx: g[1],
        rcx: g[2],
        rdx: g[3],
        rsi: g[4],
        rdi: g[5],
        rsp: g[6],
        rbp: g[7],
        r8: g[8],
        r9: g[9],
        r10: g[10],
        r11: g[11],
        r12: g[12],
        r13: g[13],
        r14: g[14],
        r15: g[15],
        rip: g[16],
        rflags: g[17],
    };
    let mut sregs = kvm_sregs {
        cs: get_seg(&mut r)?,
        ds: get_seg(&mut r)?,
        es: get_seg(&mut r)?,
        fs: get_seg(&mut r)?,
        gs: get_seg(&mut r)?,
        ss: get_seg(&mut r)?,
        tr: get_seg(&mut r)?,
        ldt: get_seg(&mut r)?,
        gdt: get_dt(&mut r)?,
        idt: get_dt(&mut r)?,
        cr0: r.u64()?,
        cr2: r.u64()?,
        cr3: r.u64()?,
        cr4: r.u64()?,
        cr8: r.u64()?,
        efer: r.u64()?,
        apic_base: r.u64()?,
        interrupt_bitmap: [0; 4],
    };
    for v in &mut sregs.interrupt_bitmap {
        *v = r.u64()?;
    }
    let mut fpu = kvm_fpu::default();
    for reg in &mut fpu.fpr {
        *reg = r.take()?;
    }
    fpu.fcw = r.u16()?;
    fpu.fsw = r.u16()?;
    fpu.ftwx = r.u8()?;
    fpu.last_opcode = r.u16()?;
    fpu.last_ip = r.u64()?;
    fpu.last_dp = r.u64()?;
    for reg in &mut fpu.xmm {
        *reg = r.take()?;
    }
    fpu.mxcsr = r.u32()?;
    let mut xsave = kvm_xsave::default();
    for v in &mut xsave.region {
        *v = r.u32()?;
    }
    let mut xcrs = kvm_xcrs {
        nr_xcrs: r.u32()?,
        flags: r.u32()?,
        ..Default::default()
    };
    for x in &mut xcrs.xcrs {
        x.xcr = r.u32()?;
        x.value = r.u64()?;
    }
    let n = r.u32()?;
    if n > MAX_MSRS {
        return Err(VcpuCodecError::TooManyMsrs(n));
    }
    let mut msrs = Vec::with_capacity(n as usize);
    for _ in 0..n {
        msrs.push(kvm_msr_entry {
            index: r.u32()?,
            reserved: 0,
            data: r.u64()?,
        });
    }
    let mut lapic = kvm_lapic_state::default();
    for c in &mut lapic.regs {
        *c = r.u8()? as _;
    }
    let mp_state = kvm_mp_state { mp_state: r.u32()? };
    let mut events = kvm_vcpu_events::default();
    let x = &mut events.exception;
    (x.injected, x.nr, x.has_error_code, x.pending) = (r.u8()?, r.u8()?, r.u8()?, r.u8()?);
    x.error_code = r.u32()?;
    let i = &mut events.interrupt;
    (i.injected, i.nr, i.soft, i.shadow) = (r.u8()?, r.u8()?, r.u8()?, r.u8()?);
    let n = &mut events.nmi;
    (n.injected, n.pending, n.masked) = (r.u8()?, r.u8()?, r.u8()?);
    events.sipi_vector = r.u32()?;
    events.flags = r.u32()?;
    let m = &mut events.smi;
    (m.smm, m.pending, m.smm_inside_nmi, m.latched_init) = (r.u8()?, r.u8()?, r.u8()?, r.u8()?);
    events.triple_fault.pending = r.u8()?;
    events.exception_has_payload = r.u8()?;
    events.exception_payload = r.u64()?;
    let mut debug_regs = kvm_debugregs::default();
    for v in &mut debug_regs.db {
        *v = r.u64()?;
    }
    debug_regs.dr6 = r.u64()?;
    debug_regs.dr7 = r.u64()?;
    debug_regs.flags = r.u64()?;
    if r.at != bytes.len() {
        return Err(VcpuCodecError::Trailing(bytes.len() - r.at));
    }
    Ok(VcpuState {
        regs,
        sregs,
        fpu,
        xsave,
        xcrs,
        msrs,
        lapic,
        mp_state,
        events,
        debug_regs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field set to something distinct.
    fn sample() -> VcpuState {
        let mut n = 0u64;
        let mut next = || {
            n += 1;
            n
        };
        let seg = |b: u64| kvm_segment {
            base: b,
            limit: b as u32 + 1,
            selector: b as u16 + 2,
            type_: 3,
            present: 1,
            dpl: 3,
            db: 1,
            s: 1,
            l: 1,
            g: 1,
            avl: 1,
            unusable: 0,
            padding: 0,
        };
        let mut s = VcpuState {
            regs: kvm_regs {
                rax: next(),
                rip: next(),
                rflags: 2,
                r15: next(),
                ..Default::default()
            },
            sregs: kvm_sregs {
                cs: seg(next()),
                ss: seg(next()),
                tr: seg(next()),
                gdt: kvm_dtable {
                    base: next(),
                    limit: 0x7f,
                    padding: [0; 3],
                },
                cr0: next(),
                cr3: next(),
                efer: next(),
                interrupt_bitmap: [1, 2, 3, 4],
                ..Default::default()
            },
            fpu: kvm_fpu {
                fcw: 0x37f,
                mxcsr: 0x1f80,
                last_ip: next(),
                ..Default::default()
            },
            xsave: kvm_xsave::default(),
            xcrs: kvm_xcrs {
                nr_xcrs: 1,
                ..Default::default()
            },
            msrs: (0..41)
                .map(|i| kvm_msr_entry {
                    index: 0xc000_0080 + i,
                    reserved: 0,
                    data: u64::from(i) * 7,
                })
                .collect(),
            lapic: kvm_lapic_state::default(),
            mp_state: kvm_mp_state { mp_state: 3 },
            events: kvm_vcpu_events::default(),
            debug_regs: kvm_debugregs {
                dr6: 0xffff0ff0,
                dr7: 0x400,
                ..Default::default()
            },
        };
        s.fpu.xmm[3] = [9; 16];
        s.xsave.region[5] = 0xdead_beef;
        s.xcrs.xcrs[0].value = 7;
        s.lapic.regs[0x20] = 1;
        s.events.exception.nr = 14;
        s.events.exception.error_code = 2;
        s.events.nmi.masked = 1;
        s.events.exception_payload = 0x1000;
        s
    }

    fn same(a: &VcpuState, b: &VcpuState) -> bool {
        encode_vcpu(a) == encode_vcpu(b)
            && a.regs == b.regs
            && a.sregs == b.sregs
            && a.msrs == b.msrs
            && a.xsave.region == b.xsave.region
            && a.lapic.regs == b.lapic.regs
            && a.debug_regs == b.debug_regs
    }

    #[test]
    fn round_trip() {
        let s = sample();
        let bytes = encode_vcpu(&s);
        assert!(same(&decode_vcpu(&bytes).ok().unwrap(), &s));
    }

    #[test]
    fn hostile_bytes_are_errors() {
        let bytes = encode_vcpu(&sample());
        for cut in (0..bytes.len()).step_by(13) {
            assert!(matches!(
                decode_vcpu(&bytes[..cut]),
                Err(VcpuCodecError::Truncated(_))
            ));
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(decode_vcpu(&long).err(), Some(VcpuCodecError::Trailing(1)));
        let mut v = bytes.clone();
        v[0] = 9;
        assert_eq!(decode_vcpu(&v).err(), Some(VcpuCodecError::Version(9)));
        // The MSR count sits after the fixed-size part; a huge one is refused.
        let at = encode_vcpu(&VcpuState {
            msrs: vec![],
            ..sample()
        })
        .len()
            - 1024
            - 4
            - 37
            - 56
            - 4;
        let mut m = bytes.clone();
        m[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_vcpu(&m).err(),
            Some(VcpuCodecError::TooManyMsrs(u32::MAX))
        );
    }
}
