//! Reads the exceptions and metadata of a serialized Pinot DataTable (wire versions 3 and 4),
//! skipping the rows. Pinot servers report query errors (timeouts, missing segments) there, in
//! the final `responseType: metadata` message of a `Submit` stream, with gRPC status OK.

use std::fmt;

/// One query error a Pinot server put into a DataTable, e.g. code 250 for an execution timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exception {
    pub code: i32,
    pub message: String,
}

/// Everything `decode` reads from a DataTable: all of it but the rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The wire version: 3 (Pinot 0.x default) or 4 (Pinot 1.x).
    pub version: u32,
    /// In wire order; Pinot keeps them in a map by code, so a code appears at most once.
    pub exceptions: Vec<Exception>,
    /// Pinot's own key names and Java's text form of the values, in wire order.
    pub metadata: Vec<(String, String)>,
    /// False when the metadata stopped early: at a key id newer than this decoder, or at the end
    /// of the section before the announced entry count. `metadata` then has the entries before.
    pub metadata_complete: bool,
}

/// Why a payload is not a DataTable this module can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload ends before the version field or the fixed header.
    TooShort { needed: usize, len: usize },
    /// Not version 3 or 4: the caller should pass the message on untouched.
    UnknownVersion(u32),
    /// A section, or a value inside one, runs past the end of its section or of the payload.
    OutOfBounds {
        section: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
    /// A length, offset or count that must not be negative is.
    Negative {
        section: &'static str,
        field: &'static str,
        value: i32,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort { needed, len } => {
                write!(
                    f,
                    "datatable too short: {len} bytes, the header needs {needed}"
                )
            }
            Self::UnknownVersion(v) => write!(f, "unknown datatable version {v}"),
            Self::OutOfBounds {
                section,
                offset,
                needed,
                available,
            } => write!(
                f,
                "datatable {section} section out of bounds: {needed} bytes wanted at offset \
                 {offset}, {available} available"
            ),
            Self::Negative {
                section,
                field,
                value,
            } => {
                write!(
                    f,
                    "datatable {section} section has a negative {field}: {value}"
                )
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Version int, numRows, numColumns, then (start, length) of five sections: 13 big-endian ints.
const HEADER_LEN: usize = 13 * 4;

/// The sections the header locates, in header (and payload) order.
const SECTIONS: [&str; 5] = [
    "exceptions",
    "dictionary",
    "data schema",
    "fixed-size data",
    "variable-size data",
];

#[derive(Clone, Copy)]
enum Kind {
    Int,
    Long,
    Str,
    Bool,
}

/// Pinot's `DataTable.MetadataKey`, indexed by id. Pinot only ever appends ids (0-27 in 0.11,
/// up to 34 in 1.0-1.3, 44 on master), so one table serves every version.
const KEYS: [(&str, Kind); 45] = [
    ("unknown", Kind::Str),
    ("table", Kind::Str),
    ("numDocsScanned", Kind::Long),
    ("numEntriesScannedInFilter", Kind::Long),
    ("numEntriesScannedPostFilter", Kind::Long),
    ("numSegmentsQueried", Kind::Int),
    ("numSegmentsProcessed", Kind::Int),
    ("numSegmentsMatched", Kind::Int),
    ("numConsumingSegmentsQueried", Kind::Int),
    ("minConsumingFreshnessTimeMs", Kind::Long),
    ("totalDocs", Kind::Long),
    ("numGroupsLimitReached", Kind::Str),
    ("timeUsedMs", Kind::Long),
    ("traceInfo", Kind::Str),
    ("requestId", Kind::Long),
    ("numResizes", Kind::Int),
    ("resizeTimeMs", Kind::Long),
    ("threadCpuTimeNs", Kind::Long),
    ("systemActivitiesCpuTimeNs", Kind::Long),
    ("responseSerializationCpuTimeNs", Kind::Long),
    ("numSegmentsPrunedByServer", Kind::Int),
    ("numSegmentsPrunedByInvalid", Kind::Int),
    ("numSegmentsPrunedByLimit", Kind::Int),
    ("numSegmentsPrunedByValue", Kind::Int),
    ("explainPlanNumEmptyFilterSegments", Kind::Int),
    ("explainPlanNumMatchAllFilterSegments", Kind::Int),
    ("numConsumingSegmentsProcessed", Kind::Int),
    ("numConsumingSegmentsMatched", Kind::Int),
    ("numBlocks", Kind::Int),
    ("numRows", Kind::Int),
    ("operatorExecutionTimeMs", Kind::Long),
    ("operatorId", Kind::Str),
    ("operatorExecStartTimeMs", Kind::Long),
    ("operatorExecEndTimeMs", Kind::Long),
    ("maxRowsInJoinReached", Kind::Str),
    ("numGroupsWarningLimitReached", Kind::Str),
    ("threadMemAllocatedBytes", Kind::Long),
    ("responseSerMemAllocatedBytes", Kind::Long),
    ("sorted", Kind::Bool),
    ("groupsTrimmed", Kind::Str),
    ("workloadName", Kind::Str),
    ("queryId", Kind::Str),
    ("earlyTerminationReason", Kind::Str),
    ("incompleteMerge", Kind::Str),
    ("liteModeLeafStageLimitReached", Kind::Str),
];

/// Decodes the exceptions and metadata of a DataTable as a Pinot server serializes it.
///
/// Never panics, and allocates no more than the payload's own size allows. Strings are decoded
/// the way Java's `new String(bytes, UTF_8)` does it, replacing invalid UTF-8.
pub fn decode(payload: &[u8]) -> Result<Summary, DecodeError> {
    let too_short = |needed| DecodeError::TooShort {
        needed,
        len: payload.len(),
    };
    let mut header = Reader::new(payload, 0, "header");
    let version = header.i32().map_err(|_| too_short(4))? as u32;
    if version != 3 && version != 4 {
        return Err(DecodeError::UnknownVersion(version));
    }
    if payload.len() < HEADER_LEN {
        return Err(too_short(HEADER_LEN));
    }
    header.take(8)?; // numRows and numColumns: rows are not decoded here.

    let mut exceptions = Vec::new();
    // Pinot reads the metadata length right where the last non-empty section left off.
    let mut metadata_at = HEADER_LEN;
    for name in SECTIONS {
        let (start, len) = (header.i32()?, header.i32()?);
        // Pinot skips an empty section without looking at its start.
        if len == 0 {
            continue;
        }
        let start = non_negative(start, name, "start")?;
        let len = non_negative(len, name, "length")?;
        let mut section = Reader::section(payload, start, len, name)?;
        if name == "exceptions" {
            exceptions = read_exceptions(&mut section)?;
        }
        metadata_at = start + len; // cannot overflow: Reader::section checked it.
    }

    let mut tail = Reader::section(
        payload,
        metadata_at,
        payload.len().saturating_sub(metadata_at),
        "metadata",
    )?;
    let len = tail.count("length")?;
    let (metadata, metadata_complete) = if len == 0 {
        (Vec::new(), true)
    } else {
        read_metadata(&mut tail.sub(len)?)?
    };
    Ok(Summary {
        version,
        exceptions,
        metadata,
        metadata_complete,
    })
}

/// `[count][code, length, UTF-8 message]*`, identical in versions 3 and 4.
fn read_exceptions(r: &mut Reader) -> Result<Vec<Exception>, DecodeError> {
    let count = r.count("exception count")?;
    // Each exception takes at least 8 bytes: a lying count cannot make us allocate more.
    let mut out = Vec::with_capacity(count.min(r.remaining() / 8));
    for _ in 0..count {
        let code = r.i32()?;
        out.push(Exception {
            code,
            message: r.string()?,
        });
    }
    Ok(out)
}

/// `[count][key id, value]*`, the value's width set by the key's type.
fn read_metadata(r: &mut Reader) -> Result<(Vec<(String, String)>, bool), DecodeError> {
    let count = r.count("entry count")?;
    // Each entry takes at least 5 bytes (an id and a boolean), whatever the count claims.
    let mut out = Vec::with_capacity(count.min(r.remaining() / 5));
    for _ in 0..count {
        // Pinot's writer counts keys it then skips as unknown, so the count may overshoot.
        if r.remaining() == 0 {
            return Ok((out, false));
        }
        let id = r.i32()?;
        // A key we do not know has a value of unknown width: nothing after it can be read.
        let Some(&(name, kind)) = usize::try_from(id).ok().and_then(|i| KEYS.get(i)) else {
            return Ok((out, false));
        };
        let value = match kind {
            Kind::Int => r.i32()?.to_string(),
            Kind::Long => i64::from_be_bytes(r.array()?).to_string(),
            Kind::Bool => (r.array::<1>()?[0] == 1).to_string(),
            Kind::Str => r.string()?,
        };
        out.push((name.to_owned(), value));
    }
    Ok((out, true))
}

fn non_negative(
    value: i32,
    section: &'static str,
    field: &'static str,
) -> Result<usize, DecodeError> {
    usize::try_from(value).map_err(|_| DecodeError::Negative {
        section,
        field,
        value,
    })
}

/// A bounds-checked big-endian cursor over one section of the payload.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf` in the payload, for error messages.
    base: usize,
    section: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize, section: &'static str) -> Self {
        Reader {
            buf,
            pos: 0,
            base,
            section,
        }
    }

    /// The `len` bytes at `start` of the payload, which must all be there.
    fn section(
        payload: &'a [u8],
        start: usize,
        len: usize,
        section: &'static str,
    ) -> Result<Self, DecodeError> {
        match start
            .checked_add(len)
            .and_then(|end| payload.get(start..end))
        {
            Some(buf) => Ok(Self::new(buf, start, section)),
            None => Err(DecodeError::OutOfBounds {
                section,
                offset: start,
                needed: len,
                available: payload.len().saturating_sub(start),
            }),
        }
    }

    /// The next `len` bytes, as a reader of their own.
    fn sub(&mut self, len: usize) -> Result<Self, DecodeError> {
        let base = self.base + self.pos;
        Ok(Self::new(self.take(len)?, base, self.section))
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::OutOfBounds {
                section: self.section,
                offset: self.base + self.pos,
                needed: n,
                available: self.remaining(),
            });
        }
        let (bytes, _) = self.buf[self.pos..].split_at(n);
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn count(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let value = self.i32()?;
        non_negative(value, self.section, field)
    }

    /// An int length then that many bytes; lossy like Java, which never rejects the bytes.
    fn string(&mut self) -> Result<String, DecodeError> {
        let len = self.count("string length")?;
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }
}

#[cfg(test)]
mod tests;
