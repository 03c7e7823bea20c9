use super::*;
use crate::vmstate::SubsectionDesc;

static SUB_FIELDS: [FieldDesc; 2] = [
    FieldDesc {
        name: "mask",
        wire: WireType::U32,
        count: Count::One,
        since: 0,
    },
    FieldDesc {
        name: "per_queue",
        wire: WireType::Bool,
        count: Count::Field { field: "n", max: 8 },
        since: 0,
    },
];
static SUBS: [SubsectionDesc; 1] = [SubsectionDesc {
    name: "dev/aer",
    gate: "aer",
    fields: &SUB_FIELDS,
}];
static FIELDS: [FieldDesc; 5] = [
    FieldDesc {
        name: "n",
        wire: WireType::U16,
        count: Count::One,
        since: 0,
    },
    FieldDesc {
        name: "addr",
        wire: WireType::U64,
        count: Count::Field { field: "n", max: 8 },
        since: 0,
    },
    FieldDesc {
        name: "cfg",
        wire: WireType::Buffer,
        count: Count::Fixed { len: 4 },
        since: 0,
    },
    FieldDesc {
        name: "off",
        wire: WireType::I64,
        count: Count::One,
        since: 0,
    },
    FieldDesc {
        name: "late",
        wire: WireType::U8,
        count: Count::One,
        since: 3,
    },
];
static DESC: VmStateDesc = VmStateDesc {
    name: "dev",
    version_id: 3,
    minimum_version_id: 2,
    fields: &FIELDS,
    subsections: &SUBS,
};

fn sample(with_sub: bool) -> SectionData {
    let fields = vec![
        ("n".into(), FieldData::Uints(vec![2])),
        ("addr".into(), FieldData::Uints(vec![0x1000, u64::MAX])),
        ("cfg".into(), FieldData::Bytes(vec![1, 2, 3, 4])),
        ("off".into(), FieldData::Ints(vec![-5])),
        ("late".into(), FieldData::Uints(vec![7])),
    ];
    let subsections = if with_sub {
        vec![(
            "dev/aer".into(),
            vec![
                ("mask".into(), FieldData::Uints(vec![0xdead])),
                ("per_queue".into(), FieldData::Uints(vec![1, 0])),
            ],
        )]
    } else {
        vec![]
    };
    SectionData {
        fields,
        subsections,
    }
}

#[test]
fn roundtrip_with_and_without_subsection() {
    for with in [true, false] {
        let d = sample(with);
        let bytes = save(&DESC, &d).unwrap();
        assert_eq!(load_exact(&DESC, &bytes).unwrap(), d);
    }
}

#[test]
fn version_checks_name_device_and_versions() {
    let mut bytes = save(&DESC, &sample(false)).unwrap();
    // version_id sits after the 1-byte length and the 3-byte name.
    bytes[4..8].copy_from_slice(&4u32.to_be_bytes());
    let e = load(&DESC, &bytes).unwrap_err();
    assert_eq!(
        e.to_string(),
        "dev: incoming version 4 is newer than local version 3"
    );
    bytes[4..8].copy_from_slice(&1u32.to_be_bytes());
    let e = load(&DESC, &bytes).unwrap_err();
    assert_eq!(
        e.to_string(),
        "dev: incoming version 1 is older than the local minimum 2"
    );
}

#[test]
fn older_stream_leaves_new_fields_default() {
    let old = VmStateDesc {
        version_id: 2,
        ..DESC_V2
    };
    let mut d = sample(false);
    d.fields.retain(|(n, _)| n != "late");
    let bytes = save(&old, &d).unwrap();
    let got = load_exact(&DESC, &bytes).unwrap();
    assert_eq!(got.field("late"), Some(&FieldData::Uints(vec![0])));
}

static FIELDS_V2: [FieldDesc; 4] = [
    FieldDesc {
        name: "n",
        wire: WireType::U16,
        count: Count::One,
        since: 0,
    },
    FieldDesc {
        name: "addr",
        wire: WireType::U64,
        count: Count::Field { field: "n", max: 8 },
        since: 0,
    },
    FieldDesc {
        name: "cfg",
        wire: WireType::Buffer,
        count: Count::Fixed { len: 4 },
        since: 0,
    },
    FieldDesc {
        name: "off",
        wire: WireType::I64,
        count: Count::One,
        since: 0,
    },
];
const DESC_V2: VmStateDesc = VmStateDesc {
    name: "dev",
    version_id: 2,
    minimum_version_id: 2,
    fields: &FIELDS_V2,
    subsections: &SUBS,
};

#[test]
fn unknown_section_and_subsection_are_named() {
    let other = VmStateDesc {
        name: "other",
        ..DESC_V2
    };
    let bytes = save(&DESC, &sample(true)).unwrap();
    assert_eq!(
        load(&other, &bytes).unwrap_err().to_string(),
        "unknown section `dev` (expected `other`)"
    );
    let nosub = VmStateDesc {
        subsections: &[],
        ..DESC_V2
    };
    let nosub = VmStateDesc {
        version_id: 3,
        fields: &FIELDS,
        ..nosub
    };
    assert_eq!(
        load(&nosub, &bytes).unwrap_err().to_string(),
        "dev: unknown subsection `dev/aer`"
    );
}

#[test]
fn counts_are_bounded() {
    let mut d = sample(false);
    d.fields[0].1 = FieldData::Uints(vec![9]);
    d.fields[1].1 = FieldData::Uints(vec![0; 9]);
    assert!(matches!(save(&DESC, &d), Err(WireError::BadCount { .. })));
}

#[test]
fn garbage_never_panics() {
    let good = save(&DESC, &sample(true)).unwrap();
    let mut x: u64 = 0x1234_5678;
    for i in 0..5000 {
        let mut b = good.clone();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let pos = (x as usize) % b.len();
        b[pos] = (x >> 32) as u8;
        b.truncate((x as usize >> 8) % (b.len() + 1).max(1) + i % 3);
        let _ = load(&DESC, &b);
    }
}
