//! Byte-level edits of protobuf messages, for the one change the proxy makes to a request: the
//! `authorization` entry of `ServerRequest.metadata`. Everything else keeps its exact bytes,
//! including fields this proxy's copy of the schema does not know.

/// Why a message could not be edited.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated field")]
    Truncated,
    #[error("bad varint")]
    BadVarint,
    #[error("unsupported wire type {0}")]
    WireType(u64),
}

/// Removes every entry whose key is `key` in any ASCII case from the `map<string, string>` field `field`, then appends
/// one with `value` when given (in protobuf, the last entry for a key wins).
pub fn replace_map_entry(
    message: &[u8],
    field: u64,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(message.len() + 32);
    let mut rest = message;
    while !rest.is_empty() {
        let (tag, after_tag) = varint(rest)?;
        let (len, body_start) = field_extent(tag, after_tag)?;
        let whole = message.len() - rest.len();
        let field_len = (rest.len() - after_tag.len()) + body_start + len;
        let bytes = &message[whole..whole + field_len];
        let is_entry = tag >> 3 == field && tag & 7 == 2;
        let body = &after_tag[body_start..body_start + len];
        if !(is_entry && entry_key(body)?.is_some_and(|k| k.eq_ignore_ascii_case(key))) {
            out.extend_from_slice(bytes);
        }
        rest = &rest[field_len..];
    }
    if let Some(value) = value {
        let mut entry = Vec::with_capacity(key.len() + value.len() + 8);
        length_delimited(&mut entry, 1, key);
        length_delimited(&mut entry, 2, value);
        length_delimited(&mut out, field, &entry);
    }
    Ok(out)
}

/// The key (field 1) of a map entry, if it has one.
fn entry_key(entry: &[u8]) -> Result<Option<&[u8]>, WireError> {
    let mut rest = entry;
    let mut key = None;
    while !rest.is_empty() {
        let (tag, after_tag) = varint(rest)?;
        let (len, body_start) = field_extent(tag, after_tag)?;
        if tag == (1 << 3) | 2 {
            key = Some(&after_tag[body_start..body_start + len]);
        }
        rest = &after_tag[body_start + len..];
    }
    Ok(key)
}

/// For a field with `tag` whose bytes follow in `data`: (length of its value, offset of the
/// value in `data`).
fn field_extent(tag: u64, data: &[u8]) -> Result<(usize, usize), WireError> {
    let (len, start) = match tag & 7 {
        0 => {
            let (_, after) = varint(data)?;
            (data.len() - after.len(), 0)
        }
        1 => (8, 0),
        2 => {
            let (len, after) = varint(data)?;
            let len = usize::try_from(len).map_err(|_| WireError::Truncated)?;
            (len, data.len() - after.len())
        }
        5 => (4, 0),
        other => return Err(WireError::WireType(other)),
    };
    if start.checked_add(len).is_none_or(|end| end > data.len()) {
        return Err(WireError::Truncated);
    }
    Ok((len, start))
}

fn varint(data: &[u8]) -> Result<(u64, &[u8]), WireError> {
    let mut value = 0u64;
    for (i, byte) in data.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, &data[i + 1..]));
        }
    }
    Err(if data.len() < 10 {
        WireError::Truncated
    } else {
        WireError::BadVarint
    })
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn length_delimited(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ServerRequest;
    use prost::Message;
    use std::collections::HashMap;

    fn request(metadata: &[(&str, &str)]) -> ServerRequest {
        ServerRequest {
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
            sql: "select 1".into(),
            segments: vec!["s0".into()],
            ..Default::default()
        }
    }

    #[test]
    fn replaces_strips_and_keeps_everything_else() {
        let original = request(&[("FORWARD_HOST", "h"), ("authorization", "caller")]);
        let mut bytes = original.encode_to_vec();
        // An unknown field 15 must survive.
        bytes.extend_from_slice(&[0x7a, 2, b'h', b'i']);

        let injected = replace_map_entry(&bytes, 1, b"authorization", Some(b"proxy")).unwrap();
        let decoded = ServerRequest::decode(injected.as_slice()).unwrap();
        assert_eq!(decoded.metadata["authorization"], "proxy");
        assert_eq!(decoded.metadata["FORWARD_HOST"], "h");
        assert_eq!(decoded.sql, original.sql);
        assert!(injected.windows(4).any(|w| w == [0x7a, 2, b'h', b'i']));

        let stripped = replace_map_entry(&bytes, 1, b"authorization", None).unwrap();
        let decoded = ServerRequest::decode(stripped.as_slice()).unwrap();
        assert!(!decoded.metadata.contains_key("authorization"));
        assert_eq!(decoded.segments, original.segments);
        assert_eq!(stripped.len(), bytes.len() - (bytes.len() - stripped.len()));

        // Nothing to strip: the bytes are unchanged.
        let plain = request(&[("FORWARD_HOST", "h")]).encode_to_vec();
        assert_eq!(
            replace_map_entry(&plain, 1, b"authorization", None).unwrap(),
            plain
        );
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert_eq!(
            replace_map_entry(&[0x0a, 5, 1], 1, b"k", None),
            Err(WireError::Truncated)
        );
        assert_eq!(
            replace_map_entry(&[0x0b], 1, b"k", None),
            Err(WireError::WireType(3))
        );
        assert_eq!(
            replace_map_entry(&[0xff; 11], 1, b"k", None),
            Err(WireError::BadVarint)
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = replace_map_entry(&bytes, 1, b"authorization", Some(b"x"));
        }
    }
}
