use super::*;
use devices::generated::CATALOG;

fn parse_args(drives: &[&str], devices: &[&str], incoming: bool) -> Result<Instances, String> {
    let d: Vec<String> = drives.iter().map(|s| s.to_string()).collect();
    let v: Vec<String> = devices.iter().map(|s| s.to_string()).collect();
    parse(&CATALOG, &d, &v, incoming).map_err(|e| e.to_string())
}

#[test]
fn shorthand_drives_then_devices_in_order() {
    let i = parse_args(
        &["file=a.img,serial=AAA", "id=d1,file=b.img,readonly=on"],
        &[
            "virtio-blk-device,drive=d1,id=data,num-queues=3",
            "pcie-root-port,x-pcie-err-unc-mask=on",
        ],
        false,
    )
    .unwrap();
    let disks: Vec<(&str, usize, usize)> = i
        .disks
        .iter()
        .map(|d| (d.id.as_str(), d.drive, d.props.len()))
        .collect();
    assert_eq!(disks, [("virtio-blk0", 0, 0), ("data", 1, 1)]);
    assert_eq!(i.disks[1].props, [("num-queues".into(), "3".into())]);
    assert_eq!(i.drives[0].serial.as_deref(), Some("AAA"));
    assert!(i.drives[1].read_only && i.drives[1].id.as_deref() == Some("d1"));
    assert_eq!(
        i.singles,
        [Override::Device {
            type_name: "pcie-root-port".into(),
            props: vec![("x-pcie-err-unc-mask".into(), "on".into())]
        }]
    );
    // The one root port may be named by its id.
    parse_args(&[], &["pcie-root-port,id=pcie-root-port0,slot=2"], false).unwrap();
}

#[test]
fn every_bad_input_is_named() {
    let cases: &[(&[&str], &[&str], &str)] = &[
        (
            &[],
            &["virtio-blk-devic,drive=x"],
            "unknown device type `virtio-blk-devic` (did you mean `virtio-blk-device`?)",
        ),
        (
            &[],
            &["pci-device,acpi-index=1"],
            "pci-device is an abstract type",
        ),
        (
            &[],
            &["virtio-rng-pci,vectors=4"],
            "this VMM cannot create a virtio-rng-pci",
        ),
        (&[], &["virtio-mmio"], "comes with each virtio-blk-device"),
        (
            &[],
            &["qemu64-x86_64-cpu,family=6"],
            "set the CPU model with --global qemu64-x86_64-cpu.PROP=VALUE",
        ),
        (
            &["id=d0,file=a"],
            &["virtio-blk-device,drive=d0,num-queuez=3"],
            "has no property `num-queuez` (did you mean `num-queues`?)",
        ),
        (
            &["id=d0,file=a"],
            &["virtio-blk-device,drive=d0,num-queues=99"],
            "bad value for virtio-blk-device.num-queues",
        ),
        (
            &["id=d0,file=a", "id=d0,file=b"],
            &[],
            "two --drive have id `d0`",
        ),
        (
            &["id=d0,file=a", "id=d1,file=b"],
            &[
                "virtio-blk-device,drive=d0,id=x",
                "virtio-blk-device,drive=d1,id=x",
            ],
            "two devices have id `x`",
        ),
        (
            &["id=d0,file=a"],
            &["virtio-blk-device,drive=d0,id=pcie-root-port0"],
            "two devices have id `pcie-root-port0`",
        ),
        (
            &["id=disk0,file=a"],
            &["virtio-blk-device,drive=disk1"],
            "no --drive has id `disk1` (did you mean `disk0`?)",
        ),
        (
            &["id=d0,file=a"],
            &["virtio-blk-device,drive=d0", "virtio-blk-device,drive=d0"],
            "drive `d0` is already used by another device",
        ),
        (
            &["id=d0,file=a"],
            &[],
            "drive `d0` is never used: add --device virtio-blk-device,drive=d0",
        ),
        (&[], &["virtio-blk-device,num-queues=3"], "needs drive=ID"),
        (
            &[],
            &["pcie-root-port,id=rp1"],
            "the machine has one pcie-root-port, `pcie-root-port0`",
        ),
        (&["id=1x,file=a"], &[], "is not a valid id"),
        (
            &["id=d0,file=a,serial=S"],
            &[],
            "a backend (id=) has no serial",
        ),
    ];
    for (drives, devices, want) in cases {
        let e = parse_args(drives, devices, false).unwrap_err();
        assert!(
            e.contains(want),
            "{drives:?} {devices:?}: want `{want}`, got `{e}`"
        );
    }
}

#[test]
fn a_destination_may_leave_backends_to_the_stream() {
    let i = parse_args(&["id=a,file=a.img", "id=b,file=b.img"], &[], true).unwrap();
    let ids: Vec<&str> = i.disks.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["virtio-blk0", "virtio-blk1"]);
}
