/// Size of a PCIe function's configuration space.
pub const CONFIG_SIZE: usize = 4096;

/// A 4 KiB PCIe configuration space with per-byte write masks.
///
/// A guest write to byte `i` changes only the bits set in `wmask[i]`, and
/// clears the bits set in both the written value and `w1cmask[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigSpace {
    /// Current contents.
    pub data: Vec<u8>,
    /// Guest-writable bits.
    pub wmask: Vec<u8>,
    /// Write-1-to-clear bits.
    pub w1cmask: Vec<u8>,
}

impl ConfigSpace {
    /// All zero, nothing writable.
    pub fn new() -> Self {
        Self {
            data: vec![0; CONFIG_SIZE],
            wmask: vec![0; CONFIG_SIZE],
            w1cmask: vec![0; CONFIG_SIZE],
        }
    }

    /// Sets a little-endian value (device side; ignores masks).
    pub fn set(&mut self, off: usize, bytes: &[u8]) {
        if let Some(d) = self.data.get_mut(off..off + bytes.len()) {
            d.copy_from_slice(bytes);
        }
    }
    /// Device-side 16-bit set.
    pub fn set_u16(&mut self, off: usize, v: u16) {
        self.set(off, &v.to_le_bytes());
    }
    /// Device-side 32-bit set.
    pub fn set_u32(&mut self, off: usize, v: u32) {
        self.set(off, &v.to_le_bytes());
    }
    /// Sets the write mask of a 32-bit register.
    pub fn set_wmask_u32(&mut self, off: usize, v: u32) {
        if let Some(d) = self.wmask.get_mut(off..off + 4) {
            d.copy_from_slice(&v.to_le_bytes());
        }
    }
    /// Sets the write mask of a 16-bit register.
    pub fn set_wmask_u16(&mut self, off: usize, v: u16) {
        if let Some(d) = self.wmask.get_mut(off..off + 2) {
            d.copy_from_slice(&v.to_le_bytes());
        }
    }
    /// Sets the write-1-to-clear mask of a 32-bit register.
    pub fn set_w1cmask_u32(&mut self, off: usize, v: u32) {
        if let Some(d) = self.w1cmask.get_mut(off..off + 4) {
            d.copy_from_slice(&v.to_le_bytes());
        }
    }
    /// Reads a 32-bit register.
    pub fn u32_at(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        self.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    /// Guest read; bytes outside the space read as 0xff.
    pub fn read(&self, off: usize, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.data.get(off + i).copied().unwrap_or(0xff);
        }
    }

    /// Guest write through the masks.
    pub fn write(&mut self, off: usize, val: &[u8]) {
        for (i, &v) in val.iter().enumerate() {
            let j = off + i;
            if j >= CONFIG_SIZE {
                break;
            }
            let (w, c) = (self.wmask[j], self.w1cmask[j]);
            let old = self.data[j];
            self.data[j] = ((old & !w) | (v & w)) & !(v & c);
        }
    }
}

impl Default for ConfigSpace {
    fn default() -> Self {
        Self::new()
    }
}
