//! `scripts/reference-qemu10.sh --mirror FILE...`: the mirror the backports
//! suite is fetched from, derived from apt sources (run on fixtures; no
//! network, no root).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The script's `--mirror` answer for `files` named `name` with `text`.
fn mirror(files: &[(&str, &str)]) -> Result<String, String> {
    let dir = std::env::temp_dir().join(format!(
        "vmm-xtask-mirror-{}-{}",
        std::process::id(),
        files.len()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut paths: Vec<PathBuf> = Vec::new();
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| e.to_string())?;
        paths.push(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/reference-qemu10.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg("--mirror")
        .args(&paths)
        .output()
        .map_err(|e| e.to_string());
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

const KEY: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

#[test]
fn deb822_stanza_with_bookworm() {
    let text = format!(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\
         Components: main\nSigned-By: {KEY}\n\n\
         Types: deb-src deb\nURIs: http://mirror.example/debian http://other.example/debian\n\
         Suites: bookworm bookworm-updates\nComponents: main\nSigned-By: {KEY}\n"
    );
    assert_eq!(
        mirror(&[("debian.sources", &text)]),
        Ok(format!("http://mirror.example/debian {KEY}"))
    );
}

#[test]
fn disabled_source_only_and_inline_keys_are_skipped() {
    let text = "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n\
                Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n\n\
                Types: deb\nURIs: http://on.example/debian\nSuites: bookworm\nSigned-By:\n -----BEGIN PGP\n .\n";
    assert_eq!(
        mirror(&[("a.sources", text)]),
        Ok("http://on.example/debian -".to_string())
    );
}

#[test]
fn one_line_format() {
    let text = "# deb http://old.example/debian bookworm main\n\
                deb http://sec.example/debian-security bookworm-security main\n\
                deb [arch=amd64 signed-by=/k.gpg] http://line.example/debian bookworm main contrib\n";
    assert_eq!(
        mirror(&[
            (
                "none.sources",
                "Types: deb\nURIs: http://x\nSuites: trixie\n"
            ),
            ("sources.list", text)
        ]),
        Ok("http://line.example/debian /k.gpg".to_string())
    );
    assert!(mirror(&[("sources.list", "deb http://x trixie main\n")]).is_err());
}
