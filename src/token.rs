//! Credential decoding (being written).
