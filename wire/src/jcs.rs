//! RFC 8785 JCS (being written).
