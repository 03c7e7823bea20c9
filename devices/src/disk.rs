//! A raw disk image shared by everything that touches it: the guest's
//! virtio-blk device, an NBD export of it, a mirror job copying it.
//!
//! [`Disk::open`] returns the one [`Disk`] of a path while anyone holds it
//! (a rebuilt machine, the export and the job see the same object), so a
//! [`WriteHook`] set by a job sees every change the guest makes, whichever
//! machine generation makes it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use vmm_sys_util::seek_hole::SeekHole;
use vmm_sys_util::write_zeroes::{PunchHole, WriteZeroesAt};

/// Told of every change to a disk, after it reached the image.
pub trait WriteHook: Send + Sync {
    /// `len` bytes at `offset` changed (written, zeroed or discarded).
    fn changed(&self, disk: &Disk, offset: u64, len: u64);
}

/// One run of [`Disk::extents`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
    /// Backed by data (else a hole, which reads as zeroes).
    pub data: bool,
}

/// An open raw image.
pub struct Disk {
    path: PathBuf,
    read_only: bool,
    file: File,
    /// A second descriptor of the same file for the calls that move the
    /// file position or need `&mut` (`SEEK_DATA`, `fallocate`); positional
    /// I/O on `file` is unaffected.
    meta: Mutex<File>,
    hook: RwLock<Option<Arc<dyn WriteHook>>>,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
            .field("path", &self.path)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

type Registry = Mutex<HashMap<(PathBuf, bool), Weak<Disk>>>;

fn registry() -> &'static Registry {
    static R: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    R.get_or_init(Default::default)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Disk {
    /// Opens `path` (it must exist), or returns the [`Disk`] already open
    /// for it with the same mode.
    pub fn open(path: &Path, read_only: bool) -> io::Result<Arc<Disk>> {
        let key = (std::fs::canonicalize(path)?, read_only);
        let mut r = lock(registry());
        r.retain(|_, w| w.strong_count() > 0);
        if let Some(d) = r.get(&key).and_then(Weak::upgrade) {
            return Ok(d);
        }
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(&key.0)?;
        let meta = file.try_clone()?;
        let d = Arc::new(Disk {
            path: key.0.clone(),
            read_only,
            file,
            meta: Mutex::new(meta),
            hook: RwLock::new(None),
        });
        r.insert(key, Arc::downgrade(&d));
        Ok(d)
    }

    /// The image's canonical path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it was opened read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Its size in bytes.
    pub fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Installs `hook` (replacing any); `None` removes it.
    pub fn set_hook(&self, hook: Option<Arc<dyn WriteHook>>) {
        *self.hook.write().unwrap_or_else(PoisonError::into_inner) = hook;
    }

    /// Whether a hook is installed (one job at a time per disk).
    pub fn has_hook(&self) -> bool {
        self.hook
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    fn changed(&self, offset: u64, len: u64) {
        let hook = self
            .hook
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(h) = hook {
            h.changed(self, offset, len);
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Writes `buf` at `offset`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.writable()?;
        self.file.write_all_at(buf, offset)?;
        self.changed(offset, buf.len() as u64);
        Ok(())
    }

    /// Zeroes `len` bytes at `offset`; `punch` deallocates them where the
    /// file system can (they read as zeroes either way).
    pub fn write_zeroes(&self, offset: u64, len: u64, punch: bool) -> io::Result<()> {
        self.writable()?;
        if len == 0 {
            return Ok(());
        }
        let end = offset
            .checked_add(len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "range overflows"))?;
        {
            let mut f = lock(&self.meta);
            let punched = punch && f.punch_hole(offset, len).is_ok();
            if !punched {
                let mut off = offset;
                while off < end {
                    let n = usize::try_from((end - off).min(1 << 30)).unwrap_or(1 << 30);
                    f.write_all_zeroes_at(off, n)?;
                    off += n as u64;
                }
            }
        }
        self.changed(offset, len);
        Ok(())
    }

    /// Makes every completed write durable (`fdatasync`, as the reference
    /// flushes a raw image: the size never changes, so no metadata is owed).
    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Makes the data of completed writes durable.
    pub fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn writable(&self) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the disk is read-only",
            ));
        }
        Ok(())
    }

    /// Data and hole runs covering `[offset, offset + len)` (clipped to the
    /// image), from the file system's `SEEK_DATA`/`SEEK_HOLE`; a file system
    /// without them reports everything as data.
    pub fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let size = self.len()?;
        let end = offset.saturating_add(len).min(size);
        let mut out = Vec::new();
        let mut f = lock(&self.meta);
        let mut at = offset;
        while at < end {
            let data = match f.seek_data(at) {
                Ok(Some(d)) => d,
                Ok(None) => end, // no data after `at`: a hole to the end
                Err(_) => {
                    out.push(Extent {
                        offset: at,
                        len: end - at,
                        data: true,
                    });
                    break;
                }
            };
            let data = data.min(end);
            if data > at {
                out.push(Extent {
                    offset: at,
                    len: data - at,
                    data: false,
                });
            }
            if data >= end {
                break;
            }
            let hole = f.seek_hole(data)?.unwrap_or(end).min(end);
            out.push(Extent {
                offset: data,
                len: hole - data,
                data: true,
            });
            at = hole;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn image(tag: &str, len: u64) -> PathBuf {
        let p = std::env::temp_dir().join(format!("disk-{tag}-{}.img", std::process::id()));
        let f = File::create(&p).unwrap();
        f.set_len(len).unwrap();
        p
    }

    struct Count(AtomicU64);
    impl WriteHook for Count {
        fn changed(&self, _: &Disk, _: u64, len: u64) {
            self.0.fetch_add(len, Ordering::SeqCst);
        }
    }

    #[test]
    fn one_disk_per_path_and_the_hook_sees_every_change() {
        let p = image("shared", 1 << 20);
        let a = Disk::open(&p, false).unwrap();
        let b = Disk::open(&p, false).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let count = Arc::new(Count(AtomicU64::new(0)));
        a.set_hook(Some(count.clone()));
        b.write_at(&[1; 4096], 8192).unwrap();
        b.write_zeroes(0, 512, true).unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 4096 + 512);
        let mut buf = [0u8; 4096];
        a.read_at(&mut buf, 8192).unwrap();
        assert_eq!(buf, [1; 4096]);
        let ro = Disk::open(&p, true).unwrap();
        assert!(!Arc::ptr_eq(&a, &ro));
        assert!(ro.write_at(&[0], 0).is_err());
        drop((a, b, ro));
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn extents_find_data_in_a_sparse_image() {
        let p = image("sparse", 4 << 20);
        let d = Disk::open(&p, false).unwrap();
        d.write_at(&[7; 65536], 1 << 20).unwrap();
        let e = d.extents(0, 4 << 20).unwrap();
        let data: Vec<_> = e.iter().filter(|x| x.data).collect();
        assert!(
            data.iter()
                .any(|x| x.offset <= 1 << 20 && x.offset + x.len >= (1 << 20) + 65536),
            "{e:?}"
        );
        assert_eq!(e.iter().map(|x| x.len).sum::<u64>(), 4 << 20, "{e:?}");
        // Zeroing with a punch makes the range a hole again.
        d.write_zeroes(1 << 20, 65536, true).unwrap();
        let e = d.extents(0, 4 << 20).unwrap();
        assert!(e.iter().all(|x| !x.data), "{e:?}");
        drop(d);
        std::fs::remove_file(p).unwrap();
    }
}
