//! Decoder tests: DataTables built byte by byte from the layout, real ones printed by Pinot's
//! own Java classes, and a never-panics run over random and mutated inputs.
use super::*;

/// `name hex` lines printed by Pinot's own Java classes: see tests/fixtures/datatable/generate/.
const VECTORS: [&str; 2] = [
    include_str!("../../../tests/fixtures/datatable/pinot-0.11.0.hex"),
    include_str!("../../../tests/fixtures/datatable/pinot-1.3.0.hex"),
];

fn vector(name: &str) -> Vec<u8> {
    let line = VECTORS
        .iter()
        .flat_map(|f| f.lines())
        .find(|l| l.split(' ').next() == Some(name));
    let hex = line.expect(name).split_once(' ').unwrap().1;
    let byte = |i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap();
    (0..hex.len()).step_by(2).map(byte).collect()
}

/// Big-endian ints, then raw bytes: enough to spell any section by hand.
fn be(ints: &[i32], tail: &[u8]) -> Vec<u8> {
    ints.iter()
        .flat_map(|v| v.to_be_bytes())
        .chain(tail.iter().copied())
        .collect()
}

/// Lays sections out contiguously after the header, as Pinot's writer does.
fn table(version: i32, exceptions: &[(i32, &str)], rows: [&[u8]; 4], metadata: &[u8]) -> Vec<u8> {
    let mut exc = be(&[exceptions.len() as i32], &[]);
    for (code, msg) in exceptions {
        exc.extend(be(&[*code, msg.len() as i32], msg.as_bytes()));
    }
    let sections = [&exc[..], rows[0], rows[1], rows[2], rows[3]];
    let mut header = vec![version, 0, 0];
    let mut at = HEADER_LEN as i32;
    for s in sections {
        header.extend([at, s.len() as i32]);
        at += s.len() as i32;
    }
    let mut out = be(&header, &sections.concat());
    out.extend(be(&[metadata.len() as i32], metadata));
    out
}

fn exceptions(s: &Summary) -> Vec<(i32, &str)> {
    s.exceptions
        .iter()
        .map(|e| (e.code, e.message.as_str()))
        .collect()
}

/// Metadata sorted by key, since Pinot writes it in Java HashMap order.
fn metadata(s: &Summary) -> Vec<(&str, &str)> {
    let mut v: Vec<_> = s
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    v.sort();
    v
}

const NONE: [&[u8]; 4] = [&[]; 4];

#[test]
fn empty_exceptions_section_and_metadata() {
    let s = decode(&table(3, &[], NONE, &[])).unwrap();
    assert_eq!(
        (
            s.version,
            s.exceptions.len(),
            s.metadata.len(),
            s.metadata_complete
        ),
        (3, 0, 0, true)
    );
    let s = decode(&table(4, &[], NONE, &be(&[0], &[]))).unwrap();
    assert_eq!(
        (s.version, s.metadata.len(), s.metadata_complete),
        (4, 0, true)
    );
}

#[test]
fn one_and_several_exceptions_in_wire_order() {
    let s = decode(&table(3, &[(250, "ExecutionTimeoutError:\nx")], NONE, &[])).unwrap();
    assert_eq!(exceptions(&s), [(250, "ExecutionTimeoutError:\nx")]);
    let s = decode(&table(4, &[(250, "a"), (235, ""), (-1, "é")], NONE, &[])).unwrap();
    assert_eq!(exceptions(&s), [(250, "a"), (235, ""), (-1, "é")]);
}

#[test]
fn metadata_of_every_value_kind_after_row_sections() {
    // numSegmentsQueried (int), threadCpuTimeNs (long), numGroupsLimitReached (string), sorted (bool)
    let meta = be(&[4, 5, 2, 17, -1, -9, 11, 4], b"true\0\0\0\x26\x01");
    let s = decode(&table(
        4,
        &[],
        [b"dict", b"schema", &[0; 16], b"var"],
        &meta,
    ))
    .unwrap();
    let want = [
        ("numSegmentsQueried", "2"),
        ("threadCpuTimeNs", "-9"),
        ("numGroupsLimitReached", "true"),
        ("sorted", "true"),
    ];
    assert_eq!(s.metadata, want.map(|(k, v)| (k.to_owned(), v.to_owned())));
    assert!(s.metadata_complete);
}

#[test]
fn metadata_stops_at_unknown_key_or_overshooting_count() {
    let unknown = be(&[3, 10, 0, 7, 45, 1, 5, 1], &[]); // totalDocs = 7, then id 45
    let s = decode(&table(3, &[(250, "t")], NONE, &unknown)).unwrap();
    assert_eq!(
        (metadata(&s), s.metadata_complete),
        (vec![("totalDocs", "7")], false)
    );
    assert_eq!(
        exceptions(&s),
        [(250, "t")],
        "exceptions survive an unreadable metadata tail"
    );
    let s = decode(&table(3, &[], NONE, &be(&[2, 5, 1], &[]))).unwrap();
    assert_eq!((s.metadata.len(), s.metadata_complete), (1, false));
}

#[test]
fn empty_section_start_is_ignored_like_pinot_does() {
    let mut t = table(3, &[(250, "t")], NONE, &[]);
    t[20..24].copy_from_slice(&(-7i32).to_be_bytes()); // dictionary start; its length is 0
    assert_eq!(exceptions(&decode(&t).unwrap()), [(250, "t")]);
}

#[test]
fn wrong_version_and_too_short() {
    for v in [0, 1, 2, 5, 0x24, -1] {
        assert_eq!(
            decode(&table(v, &[], NONE, &[])),
            Err(DecodeError::UnknownVersion(v as u32))
        );
    }
    assert_eq!(
        decode(b""),
        Err(DecodeError::TooShort { needed: 4, len: 0 })
    );
    assert_eq!(
        decode(&[0, 0, 3]),
        Err(DecodeError::TooShort { needed: 4, len: 3 })
    );
    assert_eq!(
        decode(&[0, 0, 0, 4, 0]),
        Err(DecodeError::TooShort { needed: 52, len: 5 })
    );
}

#[test]
fn truncated_payloads_are_errors() {
    let real = vector("v3_rows_errors");
    for len in 0..real.len() {
        assert!(decode(&real[..len]).is_err(), "{len} bytes decoded");
    }
    assert!(decode(&real).is_ok());
}

#[test]
fn lengths_past_the_end() {
    let t = table(3, &[(250, "abc")], NONE, &[]);
    let patched = |at: usize, v: i32| {
        let mut bad = t.clone();
        bad[at..at + 4].copy_from_slice(&v.to_be_bytes());
        decode(&bad).unwrap_err()
    };
    let oob = |section, offset, needed, available| DecodeError::OutOfBounds {
        section,
        offset,
        needed,
        available,
    };
    assert_eq!(patched(16, 200), oob("exceptions", 52, 200, 19)); // section length
    assert_eq!(patched(60, 4), oob("exceptions", 64, 4, 3)); // message length, one byte too many
    assert_eq!(patched(67, 1), oob("metadata", 71, 1, 0)); // metadata length, nothing follows
    assert_eq!(
        patched(12, i32::MAX),
        oob("exceptions", i32::MAX as usize, 15, 0)
    ); // section start
}

#[test]
fn negative_lengths_and_counts() {
    let t = table(3, &[(250, "abc")], NONE, &be(&[1, 11, 1], b"x"));
    // (byte index of the int, section, field)
    let cases = [
        (12, "exceptions", "start"),
        (16, "exceptions", "length"),
        (52, "exceptions", "exception count"),
        (60, "exceptions", "string length"),
        (67, "metadata", "length"),
        (71, "metadata", "entry count"),
        (79, "metadata", "string length"),
    ];
    for (at, section, field) in cases {
        let mut bad = t.clone();
        bad[at..at + 4].copy_from_slice(&(-2i32).to_be_bytes());
        assert_eq!(
            decode(&bad),
            Err(DecodeError::Negative {
                section,
                field,
                value: -2
            }),
            "{field}"
        );
    }
}

#[test]
fn error_messages_are_lower_case() {
    let e = DecodeError::OutOfBounds {
        section: "exceptions",
        offset: 52,
        needed: 9,
        available: 3,
    };
    assert_eq!(
        e.to_string(),
        "datatable exceptions section out of bounds: 9 bytes wanted at offset 52, 3 available"
    );
    assert_eq!(
        DecodeError::UnknownVersion(7).to_string(),
        "unknown datatable version 7"
    );
}

#[test]
fn pinot_0_11_execution_timeout() {
    let stats = [
        ("numDocsScanned", "0"),
        ("numEntriesScannedInFilter", "0"),
        ("numEntriesScannedPostFilter", "0"),
        ("numSegmentsMatched", "0"),
        ("numSegmentsProcessed", "0"),
        ("numSegmentsPrunedByServer", "0"),
        ("numSegmentsQueried", "2"),
        ("timeUsedMs", "13"),
        ("totalDocs", "1000"),
    ];
    for (name, version) in [("v3_timeout", 3), ("v4_011_timeout", 4)] {
        let s = decode(&vector(name)).unwrap();
        assert_eq!(
            (s.version, s.exceptions.len(), s.exceptions[0].code),
            (version, 1, 250)
        );
        let trace = "ExecutionTimeoutError:\njava.util.concurrent.TimeoutException: Timed out while polling results block\n\tat ";
        assert!(s.exceptions[0].message.starts_with(trace));
        assert_eq!((metadata(&s), s.metadata_complete), (stats.to_vec(), true));
    }
}

#[test]
fn pinot_0_11_rows_with_and_without_errors() {
    let s = decode(&vector("v3_rows")).unwrap();
    assert!(s.exceptions.is_empty() && s.metadata.is_empty() && s.metadata_complete);
    let s = decode(&vector("v3_rows_errors")).unwrap();
    let missing = "ServerSegmentMissing:\n1 segments [ség_0] missing on server: Server_h_8098";
    assert_eq!(
        exceptions(&s),
        [(250, "ExecutionTimeoutError:\nboom"), (235, missing)]
    );
    let stats = [
        ("numConsumingSegmentsProcessed", "3"),
        ("numGroupsLimitReached", "true"),
        ("threadCpuTimeNs", "123456789"),
    ];
    assert_eq!(metadata(&s), stats);
}

#[test]
fn pinot_1_3_version_4() {
    let s = decode(&vector("v4_130_timeout")).unwrap();
    assert_eq!(s.version, 4);
    assert_eq!(
        exceptions(&s),
        [(
            250,
            "ExecutionTimeoutError:\nTimed out while polling results block"
        )]
    );
    let stats = [
        ("maxRowsInJoinReached", "false"),
        ("numDocsScanned", "0"),
        ("numSegmentsQueried", "2"),
        ("timeUsedMs", "13"),
        ("totalDocs", "1000"),
    ];
    assert_eq!(metadata(&s), stats);
    let s = decode(&vector("v4_130_rows_errors")).unwrap();
    let missing = "ServerSegmentMissing:\n1 segments [seg_0] missing";
    assert_eq!(
        exceptions(&s),
        [(200, "QueryExecutionError:\nx"), (235, missing)]
    );
    assert_eq!(metadata(&s), [("threadCpuTimeNs", "987")]);
}

#[test]
fn never_panics_on_random_or_mutated_input() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let seeds = ["v3_timeout", "v3_rows_errors", "v4_130_rows_errors"].map(vector);
    let nasty = [0, 1, 4, 52, 0x7fff_ffff, -1, i32::MIN, 300];
    let mut seen = [0u32; 5]; // Ok, then each DecodeError variant
    for i in 0..300_000 {
        let mut buf = seeds[i % seeds.len()].clone();
        match next() % 4 {
            0 => buf = (0..next() % 128).map(|_| next() as u8).collect(),
            1 => buf.truncate(next() as usize % (buf.len() + 1)),
            _ => {
                for _ in 0..1 + next() % 3 {
                    // Overwrite an int-sized spot with a boundary value (seeds are > 100 bytes).
                    let at = next() as usize % (buf.len() - 3);
                    let v = nasty[next() as usize % nasty.len()];
                    buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
                }
            }
        }
        if i % 8 == 0 && buf.len() >= 4 {
            buf[..4].copy_from_slice(&(3 + (next() % 2) as i32).to_be_bytes());
        }
        let outcome = match decode(&buf) {
            Ok(s) => {
                // Each exception and metadata entry owns at least 5 bytes of the input.
                assert!((s.exceptions.len() + s.metadata.len()) * 5 <= buf.len());
                0
            }
            Err(DecodeError::TooShort { .. }) => 1,
            Err(DecodeError::UnknownVersion(_)) => 2,
            Err(DecodeError::OutOfBounds { .. }) => 3,
            Err(DecodeError::Negative { .. }) => 4,
        };
        seen[outcome] += 1;
    }
    // The mutations reach every outcome, not just the version check.
    assert!(seen.iter().all(|&n| n > 1000), "{seen:?}");
}
