//! The seed's facts against the compiled catalog, through the runtime API the
//! VMM uses (`Catalog::effective` with overrides).

use super::{Command, run};
use compat_runtime::{Override, OverrideError, Provenance, Value};
use devices::generated::{CATALOG, machine};

fn val(m: &str, t: &str, p: &str, o: &[Override]) -> (Value, Provenance) {
    let cfg = CATALOG.effective(m, o).expect("effective");
    let e = cfg.get(t, p).expect("prop").clone();
    (e.value, e.provenance)
}

#[test]
fn alias_names_newest() {
    assert_eq!(machine("pc").map(|m| m.name), Some("pc-10.2"));
    assert_eq!(CATALOG.effective("pc", &[]).expect("pc").machine, "pc-10.2");
}

#[test]
fn seed_facts() {
    assert_eq!(
        val("pc-5.1", "virtio-blk-device", "num-queues", &[]).0,
        Value::Uint(1)
    );
    assert_eq!(
        val("pc-5.2", "virtio-blk-device", "num-queues", &[]).0,
        Value::Auto
    );
    assert_eq!(
        val("pc-7.2", "pcie-root-port", "x-pcie-err-unc-mask", &[]).0,
        Value::Bool(false)
    );
    assert_eq!(
        val("pc-8.0", "pcie-root-port", "x-pcie-err-unc-mask", &[]).0,
        Value::Bool(true)
    );
    assert_eq!(
        val("pc-7.1", "virtio-blk-device", "queue_reset", &[]).0,
        Value::Bool(false)
    );
    assert_eq!(
        val("pc-7.2", "virtio-blk-device", "queue_reset", &[]).0,
        Value::Bool(true)
    );
    let (_, p) = val("pc-7.2", "pcie-root-port", "x-pcie-err-unc-mask", &[]);
    assert_eq!(
        p,
        Provenance::Compat {
            delta: "hw_compat_7_2".into(),
            via: "pci-device".into()
        }
    );
}

#[test]
fn precedence_default_delta_global_device() {
    let g = Override::parse_global("pci-device.x-pcie-err-unc-mask=on").expect("global");
    let (v, p) = val(
        "pc-7.2",
        "pcie-root-port",
        "x-pcie-err-unc-mask",
        std::slice::from_ref(&g),
    );
    assert_eq!((v, p), (Value::Bool(true), Provenance::Global));
    let d = Override::parse_device("pcie-root-port,x-pcie-err-unc-mask=off").expect("device");
    // -device beats -global whatever the order on the command line.
    let (v, p) = val("pc-7.2", "pcie-root-port", "x-pcie-err-unc-mask", &[d, g]);
    assert_eq!((v, p), (Value::Bool(false), Provenance::Device));
}

#[test]
fn typed_props_from_config() {
    use devices::generated::props::VirtioBlkDeviceProps;
    let cfg = CATALOG.effective("pc-5.1", &[]).expect("cfg");
    let p = VirtioBlkDeviceProps::from_config(&cfg).expect("props");
    assert_eq!(p.num_queues, compat_runtime::AutoOr::Value(1));
    assert_eq!(p.queue_size, 256);
    assert!(!p.report_discard_granularity);
    assert_eq!(p.serial, None);
}

#[test]
fn bad_input_is_typed_with_suggestions() {
    let e = CATALOG.effective("pc-5.11", &[]).unwrap_err();
    assert!(matches!(e, OverrideError::UnknownMachine { .. }), "{e}");
    assert!(e.to_string().contains("did you mean"), "{e}");
    let g = Override::parse_global("virtio-blk-device.num-queue=2").expect("syntax ok");
    let e = CATALOG.effective("pc", &[g]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "device type `virtio-blk-device` has no property `num-queue` (did you mean `num-queues`?)"
    );
    let g = Override::parse_global("virtio-blk-device.num-queues=lots").expect("syntax ok");
    assert!(matches!(
        CATALOG.effective("pc", &[g]),
        Err(OverrideError::BadValue { .. })
    ));
}

#[test]
fn diff_explains() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        c: Command,
    }
    let cli = Cli::parse_from(["vmm", "compat", "diff", "pc-7.1", "pc-7.2"]);
    let mut out = String::new();
    run(&CATALOG, cli.c, &mut out).expect("diff");
    assert!(
        out.contains(
            "virtio-blk-device.queue_reset: off [hw_compat_7_1 (via virtio-device)] -> on [default]"
        ),
        "{out}"
    );
    assert!(
        out.contains("deltas applied by pc-7.1 only: hw_compat_7_1"),
        "{out}"
    );
}

#[test]
fn generated_vmstate_roundtrips_and_checks_versions() {
    use compat_runtime::VmState;
    use devices::generated::vmstate::{
        PcieRootPortAerMaskState, PcieRootPortState, VirtioBlkDeviceState,
    };
    let blk = VirtioBlkDeviceState {
        status: 0xf,
        features_acked: 1 << 32,
        num_queues: 2,
        queue_ready: vec![true, false],
        queue_size: vec![256, 256],
        queue_desc: vec![0x1000, 0x2000],
        queue_avail: vec![0x1100, 0x2100],
        queue_used: vec![0x1200, 0x2200],
        next_avail: vec![3, 0],
        next_used: vec![3, 0],
        writeback: true,
        ..Default::default()
    };
    let bytes = blk.save().expect("save");
    assert_eq!(VirtioBlkDeviceState::load(&bytes).expect("load"), blk);
    // A queue count that does not match the arrays is refused on save.
    let bad = VirtioBlkDeviceState {
        num_queues: 3,
        ..blk.clone()
    };
    assert!(bad.save().is_err());
    // Subsection present and absent (gate on/off).
    let mut port = PcieRootPortState {
        config: vec![0; 4096],
        sub_aer_mask: None,
    };
    assert_eq!(
        PcieRootPortState::load(&port.save().expect("save")).expect("load"),
        port
    );
    port.sub_aer_mask = Some(PcieRootPortAerMaskState {
        uncor_mask: 0x40_0000,
        uncor_mask_wmask: 1,
    });
    assert_eq!(
        PcieRootPortState::load(&port.save().expect("save")).expect("load"),
        port
    );
    // The blk state loaded as a root port: an unknown section, named.
    let e = PcieRootPortState::load(&bytes).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown section `virtio-blk` (expected `pcie-root-port`)"
    );
}

/// The seed's stories as `vmm` tells them, snapshotted for review.
#[test]
fn seed_stories_snapshot() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        c: Command,
    }
    let mut all = String::new();
    for args in [
        "props -M pc-5.1 virtio-blk-device",
        "compat diff pc-5.1 pc-5.2",
        "compat diff pc-7.1 pc-7.2",
        "compat diff pc-7.2 pc-8.0",
        "props -M pc-7.2 pcie-root-port --global pci-device.x-pcie-err-unc-mask=on",
        "props -M pc-7.2 pcie-root-port --global pci-device.x-pcie-err-unc-mask=on --device pcie-root-port,x-pcie-err-unc-mask=off",
    ] {
        let cli = Cli::parse_from(std::iter::once("vmm").chain(args.split(' ')));
        all.push_str(&format!("$ vmm {args}\n"));
        run(&CATALOG, cli.c, &mut all).expect("runs");
        all.push('\n');
    }
    insta::assert_snapshot!("seed_stories", all);
}
