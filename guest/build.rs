//! Assembles `src/*.S` with the system `as` and links them with `ld` and
//! `src/guest.ld` into `$OUT_DIR/vmm-guest.elf`, a PVH-bootable ELF.
//! Only GNU binutils are needed (present on every supported machine).
//!
//! Also links `$OUT_DIR/vmm-guest-trap-io.elf`, a test variant whose TSS
//! I/O bitmap denies every port (entry.S assembled with `TRAP_IO=1`), so all
//! port I/O from CPL 3 goes through the guest's #GP emulator.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCES: &[&str] = &["entry.S", "lib.S", "main.S", "workloads.S"];

fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("vmm-guest: cannot run {cmd:?}: {e} (GNU binutils `as`/`ld` are required)")
    });
    assert!(status.success(), "vmm-guest: {cmd:?} failed with {status}");
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let src = manifest.join("src");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let as_bin = env::var("VMM_GUEST_AS").unwrap_or_else(|_| "as".into());
    let ld_bin = env::var("VMM_GUEST_LD").unwrap_or_else(|_| "ld".into());
    println!("cargo:rerun-if-env-changed=VMM_GUEST_AS");
    println!("cargo:rerun-if-env-changed=VMM_GUEST_LD");
    println!("cargo:rerun-if-changed={}", src.join("defs.inc").display());
    println!("cargo:rerun-if-changed={}", src.join("guest.ld").display());
    for name in SOURCES {
        println!("cargo:rerun-if-changed={}", src.join(name).display());
    }

    let assemble = |name: &str, obj: &Path, defsyms: &[&str]| {
        let mut cmd = Command::new(&as_bin);
        cmd.args(["--64", "--fatal-warnings"]).arg("-I").arg(&src);
        for d in defsyms {
            cmd.arg("--defsym").arg(d);
        }
        run(cmd.arg("-o").arg(obj).arg(src.join(name)));
    };
    let mut objects = Vec::new();
    for name in SOURCES {
        let obj = out.join(Path::new(name).with_extension("o"));
        assemble(name, &obj, &[]);
        objects.push(obj);
    }
    let mut trap_objects = objects.clone();
    trap_objects[0] = out.join("entry-trap-io.o");
    assemble(SOURCES[0], &trap_objects[0], &["TRAP_IO=1"]);

    // The single RWX segment is deliberate (one PT_LOAD at 1 MiB); binutils
    // >= 2.39 warn about it unless told not to, older ones lack the option.
    let ld_help = Command::new(&ld_bin)
        .arg("--help")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let quiet_rwx: &[&str] = if ld_help.contains("--no-warn-rwx-segments") {
        &["--no-warn-rwx-segments"]
    } else {
        &[]
    };

    for (elf, objs) in [
        ("vmm-guest.elf", &objects),
        ("vmm-guest-trap-io.elf", &trap_objects),
    ] {
        run(Command::new(&ld_bin)
            .args(["-m", "elf_x86_64", "-static", "-nostdlib"])
            .args(["--build-id=none", "-z", "max-page-size=0x1000"])
            .args(["-z", "noexecstack"])
            .args(quiet_rwx)
            .arg("-T")
            .arg(src.join("guest.ld"))
            .arg("-o")
            .arg(out.join(elf))
            .args(objs));
    }
}
