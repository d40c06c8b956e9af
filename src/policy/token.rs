//! Credential decoding: turns an `Authorization` header or a StarTree API token into a username
//! and password, and checks passwords against SHA-256 hashes. Pure: no I/O, no async.

pub use crate::config::Secret;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, Engine, GeneralPurpose, GeneralPurposeConfig};
use sha2::{Digest, Sha256};

/// Largest `Authorization` value or bare token accepted, in bytes. Checked before any parsing so
/// a hostile client cannot make us decode megabytes of base64.
pub const MAX_AUTHORIZATION_LEN: usize = 4096;

const ST_PREFIX: &[u8] = b"st-";
const ST_USERNAME_LEN: usize = 16;
const ST_PASSWORD_LEN: usize = 32;

/// Standard alphabet; padding optional because users copy tokens by hand and often lose the
/// trailing `=`. Trailing bits stay strict so each credential has one encoding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a credential could not be decoded. Messages never contain any part of the credential:
/// even the "scheme" may be a secret when a client sends a bare token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The value is empty or only whitespace.
    #[error("credential is empty")]
    Empty,
    /// The value is over [`MAX_AUTHORIZATION_LEN`].
    #[error("credential is {len} bytes, over the {max}-byte limit")]
    TooLong { len: usize, max: usize },
    /// The scheme is neither `Basic` nor `Bearer`.
    #[error("unknown authorization scheme, expected basic or bearer")]
    UnknownScheme,
    /// `Basic` or `Bearer` with nothing after it.
    #[error("authorization scheme has no token after it")]
    MissingToken,
    /// Not standard base64 (and not an `st-` token either).
    #[error("basic token is not valid base64")]
    Base64,
    /// Valid base64 whose bytes are not UTF-8.
    #[error("basic token does not decode to utf-8")]
    NotUtf8,
    /// The decoded basic token has no `:` separating username and password.
    #[error("basic token has no ':' between username and password")]
    NoColon,
    /// Nothing before the first `:`.
    #[error("basic token has an empty username")]
    EmptyUsername,
    /// Nothing after the first `:`.
    #[error("basic token has an empty password")]
    EmptyPassword,
    /// The parts of an `st-` token are not 16 and 32 bytes long (a missing second `-` counts as
    /// an empty password part).
    #[error(
        "st- token parts are {username_len} and {password_len} bytes long, expected 16 and 32"
    )]
    StTokenLength {
        username_len: usize,
        password_len: usize,
    },
    /// An `st-` token part holds something other than an ASCII letter or digit.
    #[error("st- token contains a character that is not an ascii letter or digit")]
    StTokenCharacter,
}

/// A username and password decoded from a header or token. `Debug` shows the username only.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The username (for an `st-` token, its 16-character key id).
    pub username: String,
    /// The password, masked in `Debug`.
    pub password: Secret,
}

/// Decodes an HTTP `Authorization` header value.
///
/// The scheme is `Basic` or `Bearer`, in any case, followed by one or more spaces and a token;
/// spaces and tabs around the whole value are ignored. Either scheme carries either token format
/// (pinot-wire.md §4): an `st-<16>-<32>` StarTree bearer token, or standard base64 of
/// `username:password`, padded or not, split on the first `:`. The length cap is checked first.
pub fn decode_authorization(value: &[u8]) -> Result<Credentials, TokenError> {
    check_len(value)?;
    let value = trim_ows(value);
    if value.is_empty() {
        return Err(TokenError::Empty);
    }
    let (scheme, token) = match value.iter().position(|&b| b == b' ') {
        Some(i) => (&value[..i], value[i..].trim_ascii_start()),
        None => (value, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"basic") && !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(TokenError::UnknownScheme);
    }
    if token.is_empty() {
        return Err(TokenError::MissingToken);
    }
    decode_token_bytes(token)
}

/// Decodes a token as a user holds it: an `st-<16>-<32>` StarTree bearer token or a base64
/// basic token (see [`decode_authorization`]), bare or with the `Bearer ` or `Basic ` scheme it
/// was copied with. Surrounding ASCII whitespace, such as the newline of a pasted token, is
/// ignored.
pub fn decode_token(token: &str) -> Result<Credentials, TokenError> {
    let token = token.as_bytes();
    check_len(token)?;
    let token = token.trim_ascii();
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    // Neither token format holds a space: one means a scheme comes first.
    let scheme_only = token.eq_ignore_ascii_case(b"bearer") || token.eq_ignore_ascii_case(b"basic");
    if token.contains(&b' ') || scheme_only {
        return decode_authorization(token);
    }
    decode_token_bytes(token)
}

fn check_len(value: &[u8]) -> Result<(), TokenError> {
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err(TokenError::TooLong {
            len: value.len(),
            max: MAX_AUTHORIZATION_LEN,
        });
    }
    Ok(())
}

/// HTTP optional whitespace is only SP and HTAB; other control bytes are left for the parsers
/// to reject.
fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// `-` is not in the standard base64 alphabet, so an `st-` prefix cannot be a basic token and
/// the two formats never need a fallback from one to the other.
fn decode_token_bytes(token: &[u8]) -> Result<Credentials, TokenError> {
    match token.strip_prefix(ST_PREFIX) {
        Some(rest) => decode_st_token(rest),
        None => decode_basic_token(token),
    }
}

fn decode_st_token(rest: &[u8]) -> Result<Credentials, TokenError> {
    let (username, password) = match rest.iter().position(|&b| b == b'-') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    if username.len() != ST_USERNAME_LEN || password.len() != ST_PASSWORD_LEN {
        return Err(TokenError::StTokenLength {
            username_len: username.len(),
            password_len: password.len(),
        });
    }
    let alphanumeric = |part: &[u8]| part.iter().all(u8::is_ascii_alphanumeric);
    if !alphanumeric(username) || !alphanumeric(password) {
        return Err(TokenError::StTokenCharacter);
    }
    // Both parts are ASCII alphanumerics, hence valid UTF-8.
    Ok(Credentials {
        username: String::from_utf8_lossy(username).into_owned(),
        password: Secret::new(String::from_utf8_lossy(password).into_owned()),
    })
}

fn decode_basic_token(token: &[u8]) -> Result<Credentials, TokenError> {
    // The base64 error is dropped on purpose: its message quotes the offending byte.
    let bytes = BASE64.decode(token).map_err(|_| TokenError::Base64)?;
    let text = String::from_utf8(bytes).map_err(|_| TokenError::NotUtf8)?;
    let (username, password) = text.split_once(':').ok_or(TokenError::NoColon)?;
    if username.is_empty() {
        return Err(TokenError::EmptyUsername);
    }
    if password.is_empty() {
        return Err(TokenError::EmptyPassword);
    }
    Ok(Credentials {
        username: username.to_owned(),
        password: Secret::new(password.to_owned()),
    })
}

/// Lower-case hex SHA-256 of `password`, the form stored in config.
#[must_use]
pub fn hash_password(password: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(password.as_bytes());
    let mut out = String::with_capacity(digest.len() * 2);
    for byte in digest {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// What `pinot-proxy token decode` prints: the pair, then the matching Trino properties.
pub fn describe(credentials: &Credentials) -> String {
    let (user, password) = (&credentials.username, credentials.password.expose());
    let mut out = format!("username={user}\npassword={password}\n\n# Trino catalog properties\n");
    for component in ["controller", "broker"] {
        out.push_str(&format!(
            "pinot.{component}.authentication.type=PASSWORD\n\
             pinot.{component}.authentication.user={user}\n\
             pinot.{component}.authentication.password={password}\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    use proptest::prelude::*;

    const BASIC_PLAIN: &str =
        "4cefb8480f8f4a7886a5c9da1056a7b5:yYGUYlWPUiNNN46nFZcOo3aTOqICP2aAk1qxT5B8AJQ=";
    const BASIC_USER: &str = "4cefb8480f8f4a7886a5c9da1056a7b5";
    const BASIC_PASS: &str = "yYGUYlWPUiNNN46nFZcOo3aTOqICP2aAk1qxT5B8AJQ=";
    /// Computed once with `printf '%s' "$BASIC_PLAIN" | base64 -w0`.
    const BASIC_TOKEN: &str = "NGNlZmI4NDgwZjhmNGE3ODg2YTVjOWRhMTA1NmE3YjU6eVlHVVlsV1BVaU5OTjQ2bkZaY09vM2FUT3FJQ1AyYUFrMXF4VDVCOEFKUT0=";
    const ST_TOKEN: &str = "st-XkQBXKr652MV1VF9-5gkhGWNaGAdA1NU5yrHXRSPKMCcNRlRg";
    const ST_USER: &str = "XkQBXKr652MV1VF9";
    const ST_PASS: &str = "5gkhGWNaGAdA1NU5yrHXRSPKMCcNRlRg";

    /// `(username, password)` in plain text, so table rows can be compared with `==`.
    type Decoded = Result<(String, String), TokenError>;

    fn pair(result: Result<Credentials, TokenError>) -> Decoded {
        result.map(|c| (c.username, c.password.expose().to_owned()))
    }

    fn ok(user: &str, pass: &str) -> Decoded {
        Ok((user.to_owned(), pass.to_owned()))
    }

    #[test]
    fn basic_token_base64_matches_plaintext() {
        assert_eq!(STANDARD.encode(BASIC_PLAIN), BASIC_TOKEN);
        assert_eq!(
            STANDARD.decode(BASIC_TOKEN).unwrap(),
            BASIC_PLAIN.as_bytes()
        );
    }

    #[test]
    fn authorization_table() {
        let unpadded = BASIC_TOKEN.trim_end_matches('=');
        let colon_pass = STANDARD.encode("user:pa:ss=word==");
        let cases: Vec<(String, Decoded)> = vec![
            (format!("Basic {BASIC_TOKEN}"), ok(BASIC_USER, BASIC_PASS)),
            (format!("basic {BASIC_TOKEN}"), ok(BASIC_USER, BASIC_PASS)),
            (format!("BASIC   {BASIC_TOKEN}"), ok(BASIC_USER, BASIC_PASS)),
            (
                format!(" \tBasic {BASIC_TOKEN} \t"),
                ok(BASIC_USER, BASIC_PASS),
            ),
            (format!("Basic {unpadded}"), ok(BASIC_USER, BASIC_PASS)),
            (format!("Bearer {BASIC_TOKEN}"), ok(BASIC_USER, BASIC_PASS)),
            (format!("Bearer {unpadded}"), ok(BASIC_USER, BASIC_PASS)),
            (format!("Bearer {ST_TOKEN}"), ok(ST_USER, ST_PASS)),
            (format!("bEaReR  {ST_TOKEN}"), ok(ST_USER, ST_PASS)),
            (format!("Basic {ST_TOKEN}"), ok(ST_USER, ST_PASS)),
            (format!("Basic {colon_pass}"), ok("user", "pa:ss=word==")),
            (format!("Basic {}", STANDARD.encode("u:p")), ok("u", "p")),
            (
                format!("Basic {}", STANDARD.encode("jürgen:pässwörd")),
                ok("jürgen", "pässwörd"),
            ),
            // Errors, one per variant.
            (String::new(), Err(TokenError::Empty)),
            ("  \t ".into(), Err(TokenError::Empty)),
            ("Basic".into(), Err(TokenError::MissingToken)),
            ("Bearer   ".into(), Err(TokenError::MissingToken)),
            (
                format!("Digest {BASIC_TOKEN}"),
                Err(TokenError::UnknownScheme),
            ),
            (
                format!("Basicx {BASIC_TOKEN}"),
                Err(TokenError::UnknownScheme),
            ),
            (BASIC_TOKEN.into(), Err(TokenError::UnknownScheme)),
            (
                format!("\tBasic\t{BASIC_TOKEN}"),
                Err(TokenError::UnknownScheme),
            ),
            (
                format!("\nBasic {BASIC_TOKEN}"),
                Err(TokenError::UnknownScheme),
            ),
            ("Basic not*base64".into(), Err(TokenError::Base64)),
            ("Basic dXNlcjpwYXNz=====".into(), Err(TokenError::Base64)),
            ("Basic dXNlcjpwYXNzx".into(), Err(TokenError::Base64)),
            ("Basic dXNlcj pwYXNz".into(), Err(TokenError::Base64)),
            ("Basic dXNlcjpwYXNz\n".into(), Err(TokenError::Base64)),
            (format!("Basic {URL_SAFE_ONLY}"), Err(TokenError::Base64)),
            ("Basic dTpwPz8/".into(), ok("u", "p???")),
            (
                format!("Basic {}", STANDARD.encode([0xff, b':', b'p'])),
                Err(TokenError::NotUtf8),
            ),
            (
                format!("Basic {}", STANDARD.encode("userpass")),
                Err(TokenError::NoColon),
            ),
            (
                format!("Basic {}", STANDARD.encode(":pass")),
                Err(TokenError::EmptyUsername),
            ),
            (
                format!("Basic {}", STANDARD.encode("user:")),
                Err(TokenError::EmptyPassword),
            ),
            (
                format!("Basic {}", STANDARD.encode("")),
                Err(TokenError::MissingToken),
            ),
            ("Basic ====".into(), Err(TokenError::Base64)),
            (
                format!("Bearer {}", &ST_TOKEN[..ST_TOKEN.len() - 1]),
                Err(TokenError::StTokenLength {
                    username_len: 16,
                    password_len: 31,
                }),
            ),
            (
                format!("Bearer {ST_TOKEN}x"),
                Err(TokenError::StTokenLength {
                    username_len: 16,
                    password_len: 33,
                }),
            ),
            (
                format!("Bearer st-{ST_USER}{ST_PASS}"),
                Err(TokenError::StTokenLength {
                    username_len: 48,
                    password_len: 0,
                }),
            ),
            (
                format!("Bearer st-{ST_USER}x-{}", &ST_PASS[1..]),
                Err(TokenError::StTokenLength {
                    username_len: 17,
                    password_len: 31,
                }),
            ),
            (
                "Bearer st-".into(),
                Err(TokenError::StTokenLength {
                    username_len: 0,
                    password_len: 0,
                }),
            ),
            (
                format!("Bearer st-{ST_USER}-{}_", &ST_PASS[1..]),
                Err(TokenError::StTokenCharacter),
            ),
            (
                format!("Bearer st-{}_-{ST_PASS}", &ST_USER[1..]),
                Err(TokenError::StTokenCharacter),
            ),
            (
                format!("Bearer st-{ST_USER}-{}-", &ST_PASS[1..]),
                Err(TokenError::StTokenCharacter),
            ),
            (
                "x".repeat(MAX_AUTHORIZATION_LEN + 1),
                Err(TokenError::TooLong {
                    len: MAX_AUTHORIZATION_LEN + 1,
                    max: MAX_AUTHORIZATION_LEN,
                }),
            ),
            // The cap comes first: a valid token padded past it is still too long.
            (
                format!("Basic {BASIC_TOKEN}{}", " ".repeat(MAX_AUTHORIZATION_LEN)),
                Err(TokenError::TooLong {
                    len: 6 + BASIC_TOKEN.len() + MAX_AUTHORIZATION_LEN,
                    max: MAX_AUTHORIZATION_LEN,
                }),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                pair(decode_authorization(input.as_bytes())),
                expected,
                "input {input:?}"
            );
        }
    }

    /// `u:p???` in the URL-safe alphabet (`dTpwPz8/` in the standard one).
    const URL_SAFE_ONLY: &str = "dTpwPz8_";

    #[test]
    fn non_utf8_header_bytes_are_errors() {
        let mut value = b"Basic ".to_vec();
        value.extend_from_slice(&[0xc3, 0x28, 0xff]);
        assert_eq!(pair(decode_authorization(&value)), Err(TokenError::Base64));
        let mut value = b"Bearer st-".to_vec();
        value.extend_from_slice(&[0xff; 49]);
        assert_eq!(
            pair(decode_authorization(&value)),
            Err(TokenError::StTokenLength {
                username_len: 49,
                password_len: 0
            })
        );
        assert_eq!(
            pair(decode_authorization(&[0xff, b' ', b'a'])),
            Err(TokenError::UnknownScheme)
        );
    }

    #[test]
    fn token_table() {
        let cases: Vec<(String, Decoded)> = vec![
            (BASIC_TOKEN.into(), ok(BASIC_USER, BASIC_PASS)),
            (
                BASIC_TOKEN.trim_end_matches('=').into(),
                ok(BASIC_USER, BASIC_PASS),
            ),
            (format!("  {BASIC_TOKEN}\n"), ok(BASIC_USER, BASIC_PASS)),
            (ST_TOKEN.into(), ok(ST_USER, ST_PASS)),
            (format!("{ST_TOKEN}\r\n"), ok(ST_USER, ST_PASS)),
            (String::new(), Err(TokenError::Empty)),
            (" \n".into(), Err(TokenError::Empty)),
            // Regression: a token pasted with its scheme was "not valid base64".
            (format!("Bearer {ST_TOKEN}"), ok(ST_USER, ST_PASS)),
            (format!(" bearer  {ST_TOKEN}\n"), ok(ST_USER, ST_PASS)),
            (format!("BASIC {BASIC_TOKEN}"), ok(BASIC_USER, BASIC_PASS)),
            (format!("Token {ST_TOKEN}"), Err(TokenError::UnknownScheme)),
            ("Bearer ".into(), Err(TokenError::MissingToken)),
            (
                "ST-XkQBXKr652MV1VF9-5gkhGWNaGAdA1NU5yrHXRSPKMCcNRlRg".into(),
                Err(TokenError::Base64),
            ),
            (STANDARD.encode("nocolon"), Err(TokenError::NoColon)),
            (STANDARD_NO_PAD.encode(":p"), Err(TokenError::EmptyUsername)),
            (STANDARD.encode("u:"), Err(TokenError::EmptyPassword)),
            (
                STANDARD.encode([b'u', b':', 0xfe]),
                Err(TokenError::NotUtf8),
            ),
            (
                "st-short-short".into(),
                Err(TokenError::StTokenLength {
                    username_len: 5,
                    password_len: 5,
                }),
            ),
            (
                format!("st-{}é-{ST_PASS}", &ST_USER[2..]),
                Err(TokenError::StTokenCharacter),
            ),
            (
                "A".repeat(MAX_AUTHORIZATION_LEN + 4),
                Err(TokenError::TooLong {
                    len: MAX_AUTHORIZATION_LEN + 4,
                    max: MAX_AUTHORIZATION_LEN,
                }),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(pair(decode_token(&input)), expected, "input {input:?}");
        }
    }

    #[test]
    fn errors_never_quote_the_secret() {
        let secret = "hunter2hunter2";
        let inputs = [
            format!("{secret} {secret}"),
            format!("Basic {secret}*"),
            format!("Basic {}", STANDARD.encode(secret)),
            format!("Basic {}", STANDARD.encode(format!(":{secret}"))),
            format!("Bearer st-{secret}-{secret}"),
            format!("Bearer st-{secret}"),
        ];
        for input in inputs {
            let err = decode_authorization(input.as_bytes()).unwrap_err();
            for text in [err.to_string(), format!("{err:?}")] {
                assert!(!text.contains("hunter2"), "{text}");
            }
        }
    }

    #[test]
    fn debug_and_display_mask_the_password() {
        for creds in [
            decode_token(ST_TOKEN).unwrap(),
            decode_token(BASIC_TOKEN).unwrap(),
        ] {
            let pass = creds.password.expose().to_owned();
            let debug = format!("{creds:?} {creds:#?}");
            assert!(!debug.contains(&pass), "{debug}");
            assert!(debug.contains(&creds.username), "{debug}");
            assert!(debug.contains("***"), "{debug}");
            assert_eq!(creds.password.to_string(), "***");
            assert_eq!(format!("{:?}", creds.password), "***");
        }
    }

    #[test]
    fn hash_password_known_values() {
        assert_eq!(
            hash_password("password"),
            "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
        );
        assert_eq!(
            hash_password(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    /// Inputs that get past the scheme check, so the property reaches the token parsers.
    fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
        let prefix = prop_oneof![
            Just(&b""[..]),
            Just(&b"Basic "[..]),
            Just(&b"bearer  "[..]),
            Just(&b"Bearer st-"[..]),
        ];
        let tail = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            proptest::collection::vec(any::<u8>(), 4000..4200),
            "[A-Za-z0-9+/=:-]{0,80}".prop_map(String::into_bytes),
        ];
        (prefix, tail).prop_map(|(p, t)| [p, &t[..]].concat())
    }

    proptest! {
        #[test]
        fn decode_authorization_never_panics(value in header_bytes()) {
            let _ = decode_authorization(&value);
        }

        #[test]
        fn decode_token_never_panics(token in prop_oneof![
            any::<String>(),
            "st-[A-Za-z0-9é_-]{0,60}",
            "[A-Za-z0-9+/= \n]{0,120}",
        ]) {
            let _ = decode_token(&token);
        }

        #[test]
        fn basic_round_trips(
            username in "[^:]{1,100}",
            password in "(?s).{1,200}",
            bearer in any::<bool>(),
            padded in any::<bool>(),
        ) {
            let plain = format!("{username}:{password}");
            let token = if padded { STANDARD.encode(&plain) } else { STANDARD_NO_PAD.encode(&plain) };
            let scheme = if bearer { "Bearer" } else { "Basic" };
            let header = format!("{scheme} {token}");
            let creds = decode_authorization(header.as_bytes()).unwrap();
            prop_assert_eq!(&creds.username, &username);
            prop_assert_eq!(creds.password.expose(), password.as_str());
            let creds = decode_token(&token).unwrap();
            prop_assert_eq!(&creds.username, &username);
            prop_assert_eq!(creds.password.expose(), password.as_str());
        }

        #[test]
        fn st_round_trips(username in "[A-Za-z0-9]{16}", password in "[A-Za-z0-9]{32}") {
            let token = format!("st-{username}-{password}");
            let creds = decode_authorization(format!("Bearer {token}").as_bytes()).unwrap();
            prop_assert_eq!(&creds.username, &username);
            prop_assert_eq!(creds.password.expose(), password.as_str());
        }

    }
}
