//! The partial-result guard on `PinotQueryServer/Submit` answers. A Pinot server reports query
//! errors (a timeout, a missing segment) inside the last `responseType: metadata` message with
//! gRPC status OK, and Trino stops reading there without decoding it. The guard follows the
//! gRPC message framing across DATA frames, reading only the head of each message to find its
//! `responseType`; it holds back just the metadata message, decodes its DataTable's exceptions,
//! and either lets it through unchanged or turns the call into an error.

use super::datatable::{self, Exception};
use crate::error::{echo, Code, Error};
use crate::metrics::Metrics;
use crate::policy::Target;
use bytes::{Buf, Bytes, BytesMut};
use prost::Message;
use std::sync::Arc;

/// The most of a message's head read to find its `responseType`: the metadata map comes first,
/// and Pinot's holds that one short entry.
const HEAD_LIMIT: usize = 512;
/// The largest metadata message held back; a larger one passes through with a warning.
const HOLD_LIMIT: usize = 1 << 20;

/// What the guard makes of a DATA frame's bytes.
#[derive(Debug, Default)]
pub(super) struct Verdict {
    /// Bytes to send on now, in order.
    pub(super) forward: Vec<Bytes>,
    /// The metadata message carried exceptions: end the call with this error instead.
    pub(super) fail: Option<Error>,
}

/// Where the guard is in the stream of length-prefixed messages.
#[derive(Debug)]
enum State {
    /// Reading a message's 5-byte prefix and the head of its body, not yet forwarded.
    Head,
    /// The rest of a message that is forwarded as it comes.
    Pass { left: usize },
    /// The rest of the metadata message, held back.
    Hold { left: usize },
    /// Something the guard cannot follow (compressed, malformed, too large): forward the rest.
    Off,
}

/// Follows one response stream.
pub(super) struct Guard {
    state: State,
    /// Bytes of the current message not yet forwarded: its prefix and head, or all of it
    /// while held.
    pending: BytesMut,
    target: Target,
    metrics: Arc<Metrics>,
    /// `servers.partial_results = "fail"`: exceptions end the call. Otherwise the guard only
    /// counts, for the audit log.
    fail: bool,
    /// Rows of the data messages (their DataTables' `numRows`), for the audit log.
    pub(super) rows: u64,
    /// The scan figures of the last message's DataTable (`numDocsScanned`, ...).
    pub(super) figures: Vec<(String, String)>,
}

/// The DataTable metadata the audit log reports.
const FIGURES: [&str; 7] = [
    "numDocsScanned",
    "numEntriesScannedInFilter",
    "numEntriesScannedPostFilter",
    "numSegmentsQueried",
    "numSegmentsProcessed",
    "numSegmentsMatched",
    "totalDocs",
];

impl Guard {
    pub(super) fn new(target: Target, metrics: Arc<Metrics>, fail: bool) -> Guard {
        Guard {
            state: State::Head,
            pending: BytesMut::new(),
            target,
            metrics,
            fail,
            rows: 0,
            figures: Vec::new(),
        }
    }

    /// Takes the next DATA frame's bytes.
    pub(super) fn feed(&mut self, mut data: Bytes) -> Verdict {
        let mut verdict = Verdict::default();
        while !data.is_empty() {
            match &mut self.state {
                State::Off => {
                    verdict.forward.push(data.split_to(data.len()));
                }
                State::Pass { left } => {
                    let take = (*left).min(data.len());
                    verdict.forward.push(data.split_to(take));
                    *left -= take;
                    if *left == 0 {
                        self.state = State::Head;
                    }
                }
                State::Hold { left } => {
                    let take = (*left).min(data.len());
                    self.pending.extend_from_slice(&data.split_to(take));
                    *left -= take;
                    if *left == 0 {
                        self.state = State::Head;
                        let message = self.pending.split().freeze();
                        match self.check(&message) {
                            Some(err) => {
                                verdict.fail = Some(err);
                                return verdict;
                            }
                            None => verdict.forward.push(message),
                        }
                    }
                }
                State::Head => {
                    let want = (5 + HEAD_LIMIT).saturating_sub(self.pending.len());
                    let take = want.min(data.len());
                    self.pending.extend_from_slice(&data[..take]);
                    match self.classify() {
                        // More of the head is needed and this frame had no more.
                        None => {
                            data.advance(take);
                        }
                        Some(next) => {
                            // Bytes of the head beyond this message belong to the next one.
                            let used = self.pending.len() - take;
                            let length = message_length(&self.pending);
                            let in_message = (5 + length).saturating_sub(used).min(take);
                            self.pending.truncate(used + in_message);
                            data.advance(in_message);
                            let seen = self.pending.len();
                            match next {
                                Next::Pass => {
                                    self.rows += payload_rows(&self.pending[5..]).unwrap_or(0);
                                    verdict.forward.push(self.pending.split().freeze());
                                    self.state =
                                        remaining(5 + length - seen, |left| State::Pass { left });
                                }
                                Next::Hold => {
                                    self.state =
                                        remaining(5 + length - seen, |left| State::Hold { left });
                                    if matches!(self.state, State::Head) {
                                        let message = self.pending.split().freeze();
                                        if let Some(err) = self.check(&message) {
                                            verdict.fail = Some(err);
                                            return verdict;
                                        }
                                        verdict.forward.push(message);
                                    }
                                }
                                Next::Off(reason) => {
                                    self.metrics.partial_results_unchecked.inc();
                                    tracing::warn!(
                                        target = %self.target,
                                        reason,
                                        "cannot follow the Submit answer; passing it through unchecked"
                                    );
                                    verdict.forward.push(self.pending.split().freeze());
                                    self.state = State::Off;
                                }
                            }
                        }
                    }
                }
            }
        }
        verdict
    }

    /// The bytes still held when the upstream stream ends (an unfinished message): they go on
    /// as they are, since nothing can be concluded from them.
    pub(super) fn finish(&mut self) -> Option<Bytes> {
        self.state = State::Off;
        (!self.pending.is_empty()).then(|| self.pending.split().freeze())
    }

    /// Decides what to do with the message whose prefix and head are in `pending`, once enough
    /// of it is there.
    fn classify(&self) -> Option<Next> {
        let pending = &self.pending[..];
        if pending.len() < 5 {
            return None;
        }
        if pending[0] != 0 {
            return Some(Next::Off("a compressed message"));
        }
        let length = message_length(pending);
        let head = &pending[5..pending.len().min(5 + length)];
        match response_type(head) {
            Head::Found(kind) if kind == b"metadata" || kind == b"nonStreaming" => {
                if length > HOLD_LIMIT {
                    return Some(Next::Off("a metadata message over 1 MiB"));
                }
                Some(Next::Hold)
            }
            Head::Found(_) | Head::Absent => Some(Next::Pass),
            Head::Incomplete if head.len() < length && head.len() < HEAD_LIMIT => None,
            Head::Incomplete => Some(Next::Pass),
        }
    }

    /// The error for a held message whose DataTable carries exceptions, if it does (and the
    /// guard fails calls); its scan figures are kept for the audit log either way.
    fn check(&mut self, message: &Bytes) -> Option<Error> {
        let payload = match crate::proto::ServerResponse::decode(&message[5..]) {
            Ok(response) => response.payload,
            Err(err) => {
                self.metrics.partial_results_unchecked.inc();
                tracing::debug!(target = %self.target, error = %err, "undecodable metadata message passed through");
                return None;
            }
        };
        match datatable::decode(&payload) {
            Ok(summary) => {
                self.figures = summary
                    .metadata
                    .into_iter()
                    .filter(|(key, _)| FIGURES.contains(&key.as_str()))
                    .collect();
                (self.fail && !summary.exceptions.is_empty())
                    .then(|| partial_result(&self.target, &summary.exceptions))
            }
            Err(err) => {
                self.metrics.partial_results_unchecked.inc();
                tracing::debug!(target = %self.target, error = %err, "undecodable DataTable passed through");
                None
            }
        }
    }
}

/// What to do with a message, from its head.
#[derive(Debug)]
enum Next {
    Pass,
    Hold,
    Off(&'static str),
}

/// The declared length of the message whose 5-byte prefix starts `prefix`.
fn message_length(prefix: &[u8]) -> usize {
    u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize
}

/// The state that reads `left` more bytes of a message, or the next message's head.
fn remaining(left: usize, state: impl FnOnce(usize) -> State) -> State {
    if left == 0 {
        State::Head
    } else {
        state(left)
    }
}

/// The `responseType` found in the head of a `ServerResponse`.
#[derive(Debug, PartialEq)]
enum Head<'a> {
    Found(&'a [u8]),
    /// The head holds the whole metadata map (or reached the payload) without one.
    Absent,
    /// The head ends inside the metadata map.
    Incomplete,
}

/// Reads the `metadata` map entries (field 1) at the start of a `ServerResponse`, stopping at
/// the first other field: protobuf writers put fields in number order, so the map comes first.
fn response_type(mut head: &[u8]) -> Head<'_> {
    loop {
        if head.is_empty() {
            return Head::Incomplete;
        }
        let Some((tag, rest)) = varint(head) else {
            return Head::Incomplete;
        };
        if tag != (1 << 3 | 2) {
            return Head::Absent;
        }
        let Some((len, rest)) = varint(rest) else {
            return Head::Incomplete;
        };
        let Some(entry) = rest.get(..len as usize) else {
            return Head::Incomplete;
        };
        if let Some(value) = entry_value(entry, b"responseType") {
            return Head::Found(value);
        }
        head = &rest[len as usize..];
    }
}

/// The `numRows` of the DataTable in a data message's head: its `payload` field (2) follows
/// the metadata map, and a DataTable starts with its version and row count.
fn payload_rows(mut head: &[u8]) -> Option<u64> {
    loop {
        let (tag, rest) = varint(head)?;
        let (len, rest) = varint(rest)?;
        match tag {
            0x0a => head = rest.get(len as usize..)?,
            0x12 => {
                let table = rest.get(..8)?;
                let version = u32::from_be_bytes(table[..4].try_into().ok()?);
                let rows = i32::from_be_bytes(table[4..8].try_into().ok()?);
                return (version == 3 || version == 4)
                    .then(|| u64::try_from(rows).ok())
                    .flatten();
            }
            _ => return None,
        }
    }
}

/// The value of a map entry (`1: key, 2: value`) whose key is `key`.
fn entry_value<'a>(mut entry: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let (mut found_key, mut value) = (false, None);
    while !entry.is_empty() {
        let (tag, rest) = varint(entry)?;
        let (len, rest) = varint(rest)?;
        let field = rest.get(..len as usize)?;
        match tag {
            0x0a => found_key = field == key,
            0x12 => value = Some(field),
            _ => return None,
        }
        entry = &rest[len as usize..];
    }
    value.filter(|_| found_key)
}

fn varint(data: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &byte) in data.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &data[i + 1..]));
        }
    }
    None
}

/// The error a call ends with when Pinot knew its answer was partial: the status follows the
/// first exception's code, the message names the server and quotes every exception.
fn partial_result(target: &Target, exceptions: &[Exception]) -> Error {
    let quoted: Vec<String> = exceptions
        .iter()
        .map(|exception| format!("error {}: {}", exception.code, echo(&exception.message)))
        .collect();
    Error::PartialResult {
        target: target.to_string(),
        code: grpc_code(effective_code(&exceptions[0])),
        exceptions: quoted.join("; "),
    }
}

/// The code that says what went wrong. Pinot 0.x wraps an execution timeout (250) in a query
/// execution error (200) whose message carries `ProcessingException(errorCode:250, ...)`.
fn effective_code(exception: &Exception) -> i32 {
    const WRAPPED: &str = "errorCode:";
    if exception.code != 200 {
        return exception.code;
    }
    exception
        .message
        .split_once(WRAPPED)
        .and_then(|(_, rest)| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or(exception.code)
}

/// The gRPC status for a Pinot `QueryException` code.
fn grpc_code(pinot: i32) -> Code {
    match pinot {
        // Combine, scheduling, execution and broker timeouts.
        170 | 240 | 250 | 400 => Code::DeadlineExceeded,
        // Shutting down, server table or segment missing, segment unavailable, not responding.
        210 | 230 | 235 | 305 | 427 => Code::Unavailable,
        // Out of capacity, resource or scan limits, too many requests.
        211 | 245 | 246 | 429 => Code::ResourceExhausted,
        180 => Code::PermissionDenied,
        190 => Code::NotFound,
        // JSON and SQL parsing, compilation, validation, unknown column.
        100 | 101 | 150 | 155 | 700 | 710 => Code::InvalidArgument,
        503 => Code::Cancelled,
        _ => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &str) -> Vec<u8> {
        let mut entry = vec![0x0a, key.len() as u8];
        entry.extend_from_slice(key.as_bytes());
        entry.extend_from_slice(&[0x12, value.len() as u8]);
        entry.extend_from_slice(value.as_bytes());
        let mut field = vec![0x0a, entry.len() as u8];
        field.extend_from_slice(&entry);
        field
    }

    #[test]
    fn response_type_is_read_from_the_head() {
        let head = entry("responseType", "metadata");
        assert_eq!(response_type(&head), Head::Found(b"metadata"));
        let mut two = entry("other", "x");
        two.extend(entry("responseType", "data"));
        two.extend_from_slice(&[0x12, 0x05]);
        assert_eq!(response_type(&two), Head::Found(b"data"));
        assert_eq!(response_type(&head[..head.len() - 1]), Head::Incomplete);
        assert_eq!(response_type(&[0x12, 0x00]), Head::Absent);
        assert_eq!(response_type(&[]), Head::Incomplete);
    }

    #[test]
    fn a_timeout_wrapped_in_a_query_execution_error_is_a_timeout() {
        // What Pinot 0.11 sends when pinot.server.query.executor.timeout passes.
        let wrapped = Exception {
            code: 200,
            message: "QueryExecutionError:\nProcessingException(errorCode:250, \
                      message:ExecutionTimeoutError:\njava.util.concurrent.TimeoutException"
                .into(),
        };
        assert_eq!(effective_code(&wrapped), 250);
        let plain = Exception {
            code: 200,
            message: "QueryExecutionError: something else".into(),
        };
        assert_eq!(effective_code(&plain), 200);
        let target = Target::parse("127.0.0.1", "8098").unwrap();
        let err = partial_result(&target, &[wrapped]);
        assert_eq!(err.grpc_code(), Code::DeadlineExceeded);
    }

    #[test]
    fn pinot_codes_map_to_grpc_codes() {
        for (pinot, grpc) in [
            (250, Code::DeadlineExceeded),
            (240, Code::DeadlineExceeded),
            (235, Code::Unavailable),
            (427, Code::Unavailable),
            (210, Code::Unavailable),
            (211, Code::ResourceExhausted),
            (429, Code::ResourceExhausted),
            (180, Code::PermissionDenied),
            (150, Code::InvalidArgument),
            (200, Code::Internal),
            (450, Code::Internal),
        ] {
            assert_eq!(grpc_code(pinot), grpc, "{pinot}");
        }
    }

    /// A framed `ServerResponse` of `kind` with `payload`.
    fn message(kind: &str, payload: Vec<u8>) -> Vec<u8> {
        let response = crate::proto::ServerResponse {
            metadata: [("responseType".to_string(), kind.to_string())].into(),
            payload,
        };
        let body = response.encode_to_vec();
        let mut out = vec![0];
        out.extend((body.len() as u32).to_be_bytes());
        out.extend(body);
        out
    }

    /// A version 3 DataTable with no rows or metadata and these exceptions.
    fn datatable(exceptions: &[(i32, &str)]) -> Vec<u8> {
        let mut section = (exceptions.len() as i32).to_be_bytes().to_vec();
        for (code, text) in exceptions {
            section.extend(code.to_be_bytes());
            section.extend((text.len() as i32).to_be_bytes());
            section.extend(text.as_bytes());
        }
        let end = 52 + section.len() as i32;
        let header = [
            3,
            0,
            0,
            52,
            section.len() as i32,
            end,
            0,
            end,
            0,
            end,
            0,
            end,
            0,
        ];
        let mut out: Vec<u8> = header.iter().flat_map(|v: &i32| v.to_be_bytes()).collect();
        out.extend(section);
        out.extend(0i32.to_be_bytes());
        out
    }

    /// Feeds `stream` cut at `cuts`; returns the bytes forwarded and whether the call failed.
    fn run(stream: &[u8], cuts: &[usize]) -> (Vec<u8>, Option<Error>) {
        let target = Target::parse("127.0.0.1", "8098").unwrap();
        let mut guard = Guard::new(target, Arc::new(Metrics::new()), true);
        let mut points: Vec<usize> = cuts.iter().map(|cut| cut % (stream.len() + 1)).collect();
        points.extend([0, stream.len()]);
        points.sort_unstable();
        let mut forwarded = Vec::new();
        for window in points.windows(2) {
            let verdict = guard.feed(Bytes::copy_from_slice(&stream[window[0]..window[1]]));
            verdict
                .forward
                .iter()
                .for_each(|b| forwarded.extend_from_slice(b));
            if verdict.fail.is_some() {
                return (forwarded, verdict.fail);
            }
        }
        forwarded.extend(guard.finish().unwrap_or_default());
        (forwarded, None)
    }

    proptest::proptest! {
        #[test]
        fn any_framing_gives_the_same_answer(cuts in proptest::collection::vec(0usize..4000, 0..24)) {
            let data: Vec<u8> = [
                message("data", vec![1; 10]),
                message("data", vec![2; 700]),
                message("data", vec![]),
            ]
            .concat();
            let clean = [data.clone(), message("metadata", datatable(&[]))].concat();
            let (forwarded, failed) = run(&clean, &cuts);
            proptest::prop_assert!(failed.is_none());
            proptest::prop_assert_eq!(forwarded, clean);

            let timeout = message("metadata", datatable(&[(250, "timed out")]));
            let (forwarded, failed) = run(&[data.clone(), timeout].concat(), &cuts);
            proptest::prop_assert_eq!(forwarded, data);
            let err = failed.expect("the call fails");
            proptest::prop_assert_eq!(err.grpc_code(), Code::DeadlineExceeded);
        }
    }
}
