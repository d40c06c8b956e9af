//! Deadlines from `grpc-timeout`: parsing the header, encoding the time left for the server,
//! and running a phase of a call until the deadline.

use crate::error::Error;
use http::HeaderValue;
use std::future::Future;
use std::time::{Duration, Instant};

/// Runs `future` until the call's deadline, if it has one.
pub(super) async fn with_deadline<T>(
    deadline: Option<Instant>,
    future: impl Future<Output = T>,
) -> Result<T, Error> {
    match deadline {
        None => Ok(future.await),
        Some(at) => {
            let started = Instant::now();
            tokio::time::timeout_at(at.into(), future)
                .await
                .map_err(|_| Error::DeadlineExceeded(started.elapsed().as_millis()))
        }
    }
}

/// Encodes a `grpc-timeout` value: at most 8 digits, in the finest unit that fits.
pub(super) fn encode(left: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let value = [
        (left.as_micros(), "u"),
        (left.as_millis(), "m"),
        (u128::from(left.as_secs()), "S"),
        (u128::from(left.as_secs() / 60), "M"),
    ]
    .into_iter()
    .find(|(amount, _)| *amount <= MAX)
    .map_or_else(
        || format!("{}H", (left.as_secs() / 3600).min(MAX as u64)),
        |(amount, unit)| format!("{amount}{unit}"),
    );
    HeaderValue::try_from(value).expect("digits and a unit are a valid header value")
}

/// Parses `grpc-timeout`: 1 to 8 digits and a unit (H, M, S, m, u, n).
pub(super) fn parse(value: &HeaderValue) -> Result<Duration, Error> {
    let bad = || {
        Error::BadTimeout(crate::error::echo(&String::from_utf8_lossy(
            value.as_bytes(),
        )))
    };
    let text = value.to_str().map_err(|_| bad())?;
    if text.len() < 2 || text.len() > 9 {
        return Err(bad());
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let amount: u64 = digits.parse().map_err(|_| bad())?;
    Ok(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_parsing_table() {
        let ok = [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("3S", Duration::from_secs(3)),
            ("250m", Duration::from_millis(250)),
            ("7u", Duration::from_micros(7)),
            ("99999999n", Duration::from_nanos(99_999_999)),
        ];
        for (text, expected) in ok {
            let value = HeaderValue::from_static(text);
            assert_eq!(parse(&value).unwrap(), expected, "{text}");
        }
        for bad in [
            "",
            "m",
            "10",
            "123456789m",
            "1.5S",
            "-1S",
            "1s",
            "1 S",
            "１S",
        ] {
            let value = HeaderValue::from_str(bad).unwrap_or(HeaderValue::from_static("x"));
            assert!(parse(&value).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn encoded_timeouts_parse_back_within_one_unit() {
        for left in [
            Duration::ZERO,
            Duration::from_micros(1500),
            Duration::from_millis(250),
            Duration::from_secs(200_000),
            Duration::from_secs(100_000_000 * 60),
            Duration::MAX,
        ] {
            let encoded = encode(left);
            let parsed = parse(&encoded).unwrap();
            assert!(parsed <= left, "{left:?} -> {encoded:?}");
        }
        assert_eq!(encode(Duration::from_millis(250)), "250000u");
    }

    proptest::proptest! {
        #[test]
        fn timeout_parsing_never_panics(text in "\\PC{0,12}") {
            if let Ok(value) = HeaderValue::from_str(&text) {
                let _ = parse(&value);
            }
        }

        #[test]
        fn encoding_always_parses(micros in 0u64..u64::MAX) {
            let left = Duration::from_micros(micros);
            proptest::prop_assert!(parse(&encode(left)).unwrap() <= left);
        }
    }
}
