//! Origins and paths: RFC 3986 normalisation for authority matching (SPEC §2, §4).

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
}
