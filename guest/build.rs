//! Assembles `src/*.S` with the system `as` and links them with `ld` and
//! `src/guest.ld` into `$OUT_DIR/vmm-guest.elf`, a PVH-bootable ELF.
//! Only GNU binutils are needed (present on every supported machine).

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

    let mut objects = Vec::new();
    for name in SOURCES {
        let input = src.join(name);
        println!("cargo:rerun-if-changed={}", input.display());
        let obj = out.join(Path::new(name).with_extension("o"));
        run(Command::new(&as_bin)
            .arg("--64")
            .arg("--fatal-warnings")
            .arg("-I")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .arg(&input));
        objects.push(obj);
    }

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

    let elf = out.join("vmm-guest.elf");
    run(Command::new(&ld_bin)
        .args([
            "-m",
            "elf_x86_64",
            "-static",
            "-nostdlib",
            "--build-id=none",
        ])
        .args(["-z", "max-page-size=0x1000", "-z", "noexecstack"])
        .args(quiet_rwx)
        .arg("-T")
        .arg(src.join("guest.ld"))
        .arg("-o")
        .arg(&elf)
        .args(&objects));
}
