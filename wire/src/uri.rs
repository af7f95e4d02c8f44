//! Origins and paths: RFC 3986 normalisation for authority matching (SPEC §2, §4).
//!
//! The one normalisation the filter (request origins, Authority Set entries, DPoP `htu`) and the
//! portal (audiences, Authority Set entries, DPoP `htu` at its token endpoint) both use.

/// `scheme://host[:port]` from a request's scheme and `:authority`: lower-case, default port removed.
/// Returns `None` for a malformed authority (userinfo, bad port, bad characters).
pub fn origin_of(scheme: &str, authority: &str) -> Option<String> {
    let scheme = scheme.to_ascii_lowercase();
    if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = split_host_port(&authority)?;
    let default = match scheme.as_str() {
        "http" => Some("80"),
        "https" => Some("443"),
        _ => None,
    };
    Some(match port {
        Some(p) if Some(p) != default => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

fn split_host_port(a: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = a.get(..end + 2)?;
        let after = rest.get(end + 1..)?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    if !host.starts_with('[') && !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    {
        return None;
    }
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    Some((host, port))
}

/// Parse `scheme://host[:port]` (a trailing `/` is tolerated) into its normalised origin.
pub fn parse_origin(s: &str) -> Option<String> {
    let (origin, path) = parse_resource(s)?;
    (path == "/").then_some(origin)
}

/// Parse an absolute resource URI into (origin, normalised path). Query and fragment are refused
/// (an Authority Set resource names a path, never a query).
pub fn parse_resource(s: &str) -> Option<(String, String)> {
    let (scheme, rest) = s.split_once("://")?;
    if rest.contains('?') || rest.contains('#') {
        return None;
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (rest.get(..i)?, rest.get(i..)?),
        None => (rest, "/"),
    };
    Some((origin_of(scheme, authority)?, normalize_path(path)?))
}

/// The (origin, normalised path) a DPoP proof's `htu` names: query and fragment are cut off first
/// (RFC 9449 §4.3). `None` when it is not an absolute URI the gateway can match.
pub fn htu_target(htu: &str) -> Option<(String, String)> {
    parse_resource(htu.split(['?', '#']).next().unwrap_or(""))
}

/// RFC 3986 §6.2.2 normalisation of an absolute path: percent-encodings of unreserved characters
/// decoded, the others upper-cased (`%2F` stays encoded and is not a separator), dot segments removed,
/// empty path = `/`. The query, if any, is cut off first. `None` for a malformed path.
pub fn normalize_path(raw: &str) -> Option<String> {
    let path = raw.split(['?', '#']).next().unwrap_or("");
    if path.is_empty() {
        return Some("/".to_owned());
    }
    if !path.starts_with('/') {
        return None;
    }
    // Percent-encoding normalisation.
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = *bytes.get(i)?;
        if b == b'%' {
            let h = hex(*bytes.get(i + 1)?)?;
            let l = hex(*bytes.get(i + 2)?)?;
            let c = (h << 4) | l;
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                decoded.push(char::from(c));
            } else {
                decoded.push('%');
                decoded.push(char::from(HEX[usize::from(h)]));
                decoded.push(char::from(HEX[usize::from(l)]));
            }
            i += 3;
        } else if b.is_ascii_graphic() {
            decoded.push(char::from(b));
            i += 1;
        } else {
            return None;
        }
    }
    // Dot-segment removal on segments.
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (idx, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing_slash = idx == last,
            ".." => {
                out.pop();
                trailing_slash = idx == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut result = String::with_capacity(decoded.len());
    for s in &out {
        result.push('/');
        result.push_str(s);
    }
    if trailing_slash || result.is_empty() {
        result.push('/');
    }
    Some(result)
}

/// Why a request path is refused: a form that upstreams may resolve to another resource than the
/// one the gateway would decide on (SPEC §2, "the path that is authorised is the path that goes
/// upstream").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not an absolute path (`*`, a relative reference, empty).
    NotAbsolute,
    /// `%2F` or `%5C`: a separator hidden in a segment.
    EncodedSeparator,
    /// `%2E`: a dot hidden in a segment.
    EncodedDot,
    /// A raw `\`.
    Backslash,
    /// `;` (or `%3B`): path parameters.
    PathParameter,
    /// A `.` or `..` segment.
    DotSegment,
    /// An empty segment (`//`) other than one trailing slash.
    EmptySegment,
    /// A percent-encoded unreserved character or lower-case hex digits: the normal form differs.
    NotNormalised,
    /// `%` not followed by two hex digits.
    InvalidEscape,
    /// `%25` followed by two hex digits: a second decoding would change the path.
    DoubleEncoding,
    /// A control or non-ASCII byte, raw or percent-encoded control.
    ControlOrNonAscii,
    /// Percent-encoded bytes that are not UTF-8 (overlong forms of `.` and `/` among them).
    InvalidUtf8,
    /// A character RFC 3986 does not allow in a path (`"`, `<`, `>`, `#`, `[`, `{`, `|`, ...).
    InvalidCharacter,
}

impl PathError {
    /// Problem detail.
    pub fn describe(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the request path is not an absolute path",
            PathError::EncodedSeparator => "the request path has an encoded / or \\ (%2F, %5C)",
            PathError::EncodedDot => "the request path has an encoded dot (%2E)",
            PathError::Backslash => "the request path has a backslash",
            PathError::PathParameter => "the request path has ; path parameters",
            PathError::DotSegment => "the request path has a . or .. segment",
            PathError::EmptySegment => "the request path has an empty segment (//)",
            PathError::NotNormalised => {
                "the request path is not in normal form (encoded unreserved character or lower-case hex)"
            }
            PathError::InvalidEscape => "the request path has an invalid percent-encoding",
            PathError::DoubleEncoding => "the request path has a double percent-encoding (%25 before hex digits)",
            PathError::ControlOrNonAscii => "the request path has a control or non-ASCII byte",
            PathError::InvalidUtf8 => "the request path has percent-encoded bytes that are not UTF-8",
            PathError::InvalidCharacter => "the request path has a character not allowed in a URI path",
        }
    }
}

/// The path part (before `?`) of a request's `:path`, when it is the one form every upstream reads
/// the same way: an absolute path in RFC 3986 normal form with no dot segments, no empty segments
/// (one trailing slash aside), no `;` parameters, no backslash, no encoded `/`, `\`, `.`, `;`, `%`
/// or control character, upper-case hex, UTF-8 escapes, printable ASCII only. This path is decided
/// on and forwarded byte for byte; anything else is refused (SPEC §2). The query is not looked at.
pub fn request_path(raw: &str) -> Result<&str, PathError> {
    // A fragment is never sent to a server; the digest's target could not say whether it was
    // forwarded, so a `#` anywhere (the query included) is refused.
    if raw.contains('#') {
        return Err(PathError::InvalidCharacter);
    }
    let path = match raw.split_once('?') {
        Some((p, _)) => p,
        None => raw,
    };
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Segment by segment (the leading `/` opens the first one).
    let mut segments = path.get(1..).unwrap_or("").split('/').peekable();
    let mut decoded: Vec<u8> = Vec::new();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if seg.is_empty() {
            if last {
                break; // one trailing slash
            }
            return Err(PathError::EmptySegment);
        }
        if seg == "." || seg == ".." {
            return Err(PathError::DotSegment);
        }
        decoded.clear();
        let sb = seg.as_bytes();
        let mut i = 0;
        while let Some(&b) = sb.get(i) {
            match b {
                b'%' => {
                    let (Some(&h), Some(&l)) = (sb.get(i + 1), sb.get(i + 2)) else {
                        return Err(PathError::InvalidEscape);
                    };
                    let (Some(hv), Some(lv)) = (hex(h), hex(l)) else { return Err(PathError::InvalidEscape) };
                    let c = (hv << 4) | lv;
                    match c {
                        b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                        b'.' => return Err(PathError::EncodedDot),
                        b';' => return Err(PathError::PathParameter),
                        0x00..=0x1F | 0x7F => return Err(PathError::ControlOrNonAscii),
                        b'%' if sb.get(i + 3).copied().and_then(hex).is_some()
                            && sb.get(i + 4).copied().and_then(hex).is_some() =>
                        {
                            return Err(PathError::DoubleEncoding)
                        }
                        _ if is_unreserved(c) => return Err(PathError::NotNormalised),
                        _ => {}
                    }
                    if h.is_ascii_lowercase() || l.is_ascii_lowercase() {
                        return Err(PathError::NotNormalised);
                    }
                    decoded.push(c);
                    i += 3;
                }
                b'\\' => return Err(PathError::Backslash),
                b';' => return Err(PathError::PathParameter),
                0x00..=0x1F | 0x7F..=0xFF => return Err(PathError::ControlOrNonAscii),
                _ if is_unreserved(b) || b"!$&'()*+,=:@".contains(&b) => {
                    decoded.push(b);
                    i += 1;
                }
                _ => return Err(PathError::InvalidCharacter),
            }
        }
        if std::str::from_utf8(&decoded).is_err() {
            return Err(PathError::InvalidUtf8);
        }
    }
    Ok(path)
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// A configured path compared the way a named operation is matched (SPEC §2): ASCII case folded and
/// one trailing slash ignored, so `POST /V1/Payments/` is the operation `POST /v1/payments`, never
/// quietly `http.post`. `prefix` matches on a segment boundary.
pub fn operation_path_matches(op_path: &str, prefix: bool, path: &str) -> bool {
    let trim = |p: &str| -> String {
        let p = if p.len() > 1 { p.strip_suffix('/').unwrap_or(p) } else { p };
        p.to_ascii_lowercase()
    };
    let (op, path) = (trim(op_path), trim(path));
    if prefix {
        path_has_prefix(&path, &op)
    } else {
        op == path
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Prefix match on a path-segment boundary: `/v1` covers `/v1` and `/v1/x`, never `/v1x`.
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let p = prefix.strip_suffix('/').unwrap_or(prefix);
    match path.strip_prefix(p) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(origin_of("HTTPS", "API.Example:443").as_deref(), Some("https://api.example"));
        assert_eq!(origin_of("http", "a.example:8080").as_deref(), Some("http://a.example:8080"));
        assert_eq!(origin_of("http", "[::1]:80").as_deref(), Some("http://[::1]"));
        assert_eq!(origin_of("http", "user@a.example"), None);
        assert_eq!(origin_of("http", "a.example:99999x"), None);
        assert_eq!(origin_of("http", "a b"), None);
        assert_eq!(parse_origin("https://a.example/").as_deref(), Some("https://a.example"));
        assert_eq!(parse_origin("https://a.example/x"), None);
    }

    #[test]
    fn paths() {
        assert_eq!(normalize_path("").as_deref(), Some("/"));
        assert_eq!(normalize_path("/v1/./a/../b?x=1").as_deref(), Some("/v1/b"));
        assert_eq!(normalize_path("/%7Ev1/%2f").as_deref(), Some("/~v1/%2F"));
        assert_eq!(normalize_path("/v1/../../etc").as_deref(), Some("/etc"));
        assert_eq!(normalize_path("/a/").as_deref(), Some("/a/"));
        assert_eq!(normalize_path("/a/.").as_deref(), Some("/a/"));
        assert_eq!(normalize_path("/%zz"), None);
        assert_eq!(normalize_path("/%4"), None);
        assert_eq!(normalize_path("relative"), None);
    }

    #[test]
    fn prefixes_on_segment_boundaries() {
        assert!(path_has_prefix("/v1", "/v1"));
        assert!(path_has_prefix("/v1/x", "/v1"));
        assert!(path_has_prefix("/v1/x", "/v1/"));
        assert!(!path_has_prefix("/v1x", "/v1"));
        assert!(!path_has_prefix("/v1%2Fx", "/v1/"));
        assert!(path_has_prefix("/anything", "/"));
    }

    #[test]
    fn request_paths_in_the_one_form_pass_byte_for_byte() {
        for p in [
            "/",
            "/v1",
            "/v1/",
            "/v1/payments",
            "/v1/a-b_c~d.e",
            "/v1/caf%C3%A9",
            "/v1/a%20b",
            "/v1/x@y:z!$&'()*+,=",
            "/v1/...",
            "/v1/.well",
            "/v1/%25",
            "/v1/%25zz",
            "/v1/%3F",
        ] {
            assert_eq!(request_path(p), Ok(p), "{p}");
        }
        assert_eq!(request_path("/v1/a?x=../..%2F;\\"), Ok("/v1/a"), "the query is not path matching");
    }

    #[test]
    fn ambiguous_request_paths_are_refused() {
        use PathError::*;
        let cases = [
            ("", NotAbsolute),
            ("*", NotAbsolute),
            ("v1/a", NotAbsolute),
            ("/v1/../admin", DotSegment),
            ("/v1/./a", DotSegment),
            ("/v1/..", DotSegment),
            ("/v1/..%2Fadmin", EncodedSeparator),
            ("/v1/..%2fadmin", EncodedSeparator),
            ("/v1/..%5Cadmin", EncodedSeparator),
            ("/v1/..%5cadmin", EncodedSeparator),
            ("/v1/..;/admin", PathParameter),
            ("/v1;x=1/a", PathParameter),
            ("/v1/a%3Bb", PathParameter),
            ("/v1\\..\\admin", Backslash),
            ("/v1//../admin", EmptySegment),
            ("//v1", EmptySegment),
            ("/v1//", EmptySegment),
            ("/v1/%2e%2e/admin", EncodedDot),
            ("/v1/%2E/x", EncodedDot),
            ("/v1/.%2e/admin", EncodedDot),
            ("/v1/a%00", ControlOrNonAscii),
            ("/v1/a%1F", ControlOrNonAscii),
            ("/v1/a%7F", ControlOrNonAscii),
            ("/v1/a\u{7f}", ControlOrNonAscii),
            ("/v1/a\tb", ControlOrNonAscii),
            ("/v1/caf\u{e9}", ControlOrNonAscii),
            ("/v1/p%61yments", NotNormalised),
            ("/v1/%7Euser", NotNormalised),
            ("/v1/caf%c3%a9", NotNormalised),
            ("/v1/%zz", InvalidEscape),
            ("/v1/%4", InvalidEscape),
            ("/v1/%", InvalidEscape),
            ("/v1/%252e%252e/admin", DoubleEncoding),
            ("/v1/%C0%AE%C0%AE/admin", InvalidUtf8),
            ("/v1/%C0%AF", InvalidUtf8),
            ("/v1/%FF", InvalidUtf8),
            ("/v1/a b", InvalidCharacter),
            ("/v1/a#b", InvalidCharacter),
            ("/v1/<a>", InvalidCharacter),
            ("/v1/a|b", InvalidCharacter),
        ];
        for (p, e) in cases {
            assert_eq!(request_path(p), Err(e), "{p:?}");
        }
    }

    #[test]
    fn operation_paths_fold_case_and_one_trailing_slash() {
        assert!(operation_path_matches("/v1/payments", false, "/v1/payments"));
        assert!(operation_path_matches("/v1/payments", false, "/V1/Payments/"));
        assert!(operation_path_matches("/v1/payments/", false, "/v1/payments"));
        assert!(!operation_path_matches("/v1/payments", false, "/v1/payments/x"));
        assert!(!operation_path_matches("/v1/payments", false, "/v1/paymentsx"));
        assert!(operation_path_matches("/v1/exports", true, "/V1/EXPORTS/q3"));
        assert!(!operation_path_matches("/v1/exports", true, "/v1/exportsx"));
        assert!(operation_path_matches("/", false, "/"));
    }
}
