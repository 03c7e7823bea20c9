//! Sealed snapshots: a `file:` stream encrypted and authenticated with a
//! key derived from a pre-shared key (`--tls-creds psk:FILE` on save and on
//! restore).
//!
//! Layout: `VMMSEAL1`, a 32-byte random salt, the identity (1-byte length,
//! bytes), then chunks: a 4-byte big-endian header (plaintext length, top
//! bit set on the last chunk) and the ciphertext with its 16-byte tag.
//! The key is HKDF-SHA256(salt, PSK, "vmm snapshot v1"); each chunk is
//! ChaCha20-Poly1305 with its index as nonce and the header as associated
//! data, so a chunk cannot be altered, reordered, dropped or the file cut
//! short without the restore noticing. A restore checks the whole file
//! ([`open`]) before it hands out a single byte: a tampered snapshot is
//! refused before any state is loaded.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// The first bytes of a sealed snapshot.
pub const MAGIC: &[u8; 8] = b"VMMSEAL1";
/// Plaintext bytes per chunk.
const CHUNK: usize = 1 << 20;
const LAST: u32 = 1 << 31;
const TAG: usize = 16;

fn key(psk: &[u8], salt: &[u8]) -> LessSafeKey {
    struct Len;
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            32
        }
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(psk);
    let mut k = [0u8; 32];
    // Expanding 32 bytes from SHA-256 cannot fail.
    if let Ok(okm) = prk.expand(&[b"vmm snapshot v1"], Len) {
        let _ = okm.fill(&mut k);
    }
    LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, &k)
            .unwrap_or_else(|_| unreachable!("a 32-byte ChaCha20-Poly1305 key is always valid")),
    )
}

fn nonce(i: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&i.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Writes a sealed snapshot; the last chunk is written by [`finish`]
/// (SealWriter::finish) or on drop (a snapshot without it is refused).
pub struct SealWriter<W: Write> {
    out: W,
    key: LessSafeKey,
    buf: Vec<u8>,
    index: u64,
    done: bool,
}

impl<W: Write> SealWriter<W> {
    /// Starts a snapshot on `out` for `identity`'s `psk`.
    pub fn new(mut out: W, identity: &str, psk: &[u8]) -> io::Result<Self> {
        let mut salt = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
            .map_err(|_| io::Error::other("no randomness for the snapshot's salt"))?;
        let id = identity.as_bytes();
        let len = u8::try_from(id.len()).map_err(|_| io::Error::other("identity too long"))?;
        out.write_all(MAGIC)?;
        out.write_all(&salt)?;
        out.write_all(&[len])?;
        out.write_all(id)?;
        Ok(Self {
            out,
            key: key(psk, &salt),
            buf: Vec::with_capacity(CHUNK),
            index: 0,
            done: false,
        })
    }

    fn seal(&mut self, last: bool) -> io::Result<()> {
        let header = self.buf.len() as u32 | if last { LAST } else { 0 };
        let header = header.to_be_bytes();
        let mut data = std::mem::take(&mut self.buf);
        self.key
            .seal_in_place_append_tag(nonce(self.index), Aad::from(header), &mut data)
            .map_err(|_| io::Error::other("sealing a snapshot chunk failed"))?;
        self.index += 1;
        self.out.write_all(&header)?;
        self.out.write_all(&data)?;
        data.clear();
        self.buf = data;
        Ok(())
    }

    /// Writes the last chunk and flushes.
    pub fn finish(&mut self) -> io::Result<()> {
        if !self.done {
            self.done = true;
            self.seal(true)?;
        }
        self.out.flush()
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.seal(false)?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl<W: Write> Drop for SealWriter<W> {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Why a sealed snapshot is refused.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("not a sealed snapshot")]
    NotSealed,
    #[error("sealed for identity `{0}`, not this key's")]
    Identity(String),
    #[error(
        "the snapshot was altered or cut short (chunk {0} does not authenticate): refused before any state was loaded"
    )]
    Tampered(u64),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Whether `head` (the file's first bytes) is a sealed snapshot.
pub fn is_sealed(head: &[u8]) -> bool {
    head.starts_with(MAGIC)
}

fn header<R: Read>(r: &mut R, identity: &str, psk: &[u8]) -> Result<LessSafeKey, SealError> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|_| SealError::NotSealed)?;
    if &magic != MAGIC {
        return Err(SealError::NotSealed);
    }
    let mut salt = [0u8; 32];
    r.read_exact(&mut salt)?;
    let mut len = [0u8; 1];
    r.read_exact(&mut len)?;
    let mut id = vec![0u8; usize::from(len[0])];
    r.read_exact(&mut id)?;
    let id = String::from_utf8_lossy(&id).into_owned();
    if id != identity {
        return Err(SealError::Identity(id));
    }
    Ok(key(psk, &salt))
}

/// Reads and authenticates the next chunk into `buf`; `Ok(true)` after the
/// last one.
fn chunk<R: Read>(
    r: &mut R,
    key: &LessSafeKey,
    index: u64,
    buf: &mut Vec<u8>,
) -> Result<bool, SealError> {
    let mut h = [0u8; 4];
    r.read_exact(&mut h)
        .map_err(|_| SealError::Tampered(index))?;
    let header = u32::from_be_bytes(h);
    let len = (header & !LAST) as usize;
    if len > CHUNK {
        return Err(SealError::Tampered(index));
    }
    buf.resize(len + TAG, 0);
    r.read_exact(buf).map_err(|_| SealError::Tampered(index))?;
    let plain = key
        .open_in_place(nonce(index), Aad::from(h), buf)
        .map_err(|_| SealError::Tampered(index))?
        .len();
    buf.truncate(plain);
    Ok(header & LAST != 0)
}

/// Checks every chunk of the sealed snapshot `f` and rewinds it; the
/// reader of its plaintext.
pub fn open<F: Read + Seek>(
    mut f: F,
    identity: &str,
    psk: &[u8],
) -> Result<OpenReader<F>, SealError> {
    let key = header(&mut f, identity, psk)?;
    let body = f.stream_position()?;
    let mut buf = Vec::with_capacity(CHUNK + TAG);
    let mut index = 0;
    while !chunk(&mut f, &key, index, &mut buf)? {
        index += 1;
    }
    let mut extra = [0u8; 1];
    if f.read(&mut extra)? != 0 {
        return Err(SealError::Tampered(index + 1));
    }
    f.seek(SeekFrom::Start(body))?;
    Ok(OpenReader {
        f,
        key,
        buf: Vec::new(),
        pos: 0,
        index: 0,
        last: false,
    })
}

/// The plaintext of a checked sealed snapshot.
pub struct OpenReader<F> {
    f: F,
    key: LessSafeKey,
    buf: Vec<u8>,
    pos: usize,
    index: u64,
    last: bool,
}

impl<F: Read> Read for OpenReader<F> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.last {
                return Ok(0);
            }
            self.last = chunk(&mut self.f, &self.key, self.index, &mut self.buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            self.index += 1;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const PSK: &[u8] = b"0123456789abcdef";

    fn sealed(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = SealWriter::new(&mut out, "qemu", PSK).unwrap();
            w.write_all(data).unwrap();
            w.finish().unwrap();
        }
        out
    }

    #[test]
    fn round_trip_over_several_chunks() {
        let data: Vec<u8> = (0..(CHUNK * 2 + 123)).map(|i| (i % 251) as u8).collect();
        let file = sealed(&data);
        assert!(is_sealed(&file));
        assert!(
            !file.windows(64).any(|w| w == &data[1000..1064]),
            "plaintext in the file"
        );
        let mut r = open(Cursor::new(file), "qemu", PSK).unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn every_flipped_byte_and_a_cut_are_refused_before_any_byte_is_read() {
        let data = vec![7u8; CHUNK + 10];
        let file = sealed(&data);
        for at in [8, 20, 41, 45, 46, 100, CHUNK, file.len() - 1] {
            let mut bad = file.clone();
            bad[at] ^= 1;
            assert!(open(Cursor::new(bad), "qemu", PSK).is_err(), "flip at {at}");
        }
        let cut = file[..file.len() - 30].to_vec();
        assert!(matches!(
            open(Cursor::new(cut), "qemu", PSK),
            Err(SealError::Tampered(_))
        ));
        let mut longer = file.clone();
        longer.push(0);
        assert!(open(Cursor::new(longer), "qemu", PSK).is_err());
        assert!(matches!(
            open(Cursor::new(file.clone()), "qemu", b"fedcba9876543210"),
            Err(SealError::Tampered(0))
        ));
        assert!(matches!(
            open(Cursor::new(file), "other", PSK),
            Err(SealError::Identity(_))
        ));
        assert!(matches!(
            open(Cursor::new(b"plain stream".to_vec()), "qemu", PSK),
            Err(SealError::NotSealed)
        ));
    }
}
