//! Compute's wire conventions: filters, pagination, error bodies, query decoding, names.

use super::*;

/// A parsed Compute filter of `field = "v"` / `field != "v"` terms (a dotted field path
/// reaches into maps, e.g. `labels.vespene_worker`), all joined by AND or all by OR.
#[derive(Debug, PartialEq)]
pub(super) struct Filter {
    pub(super) terms: Vec<(String, bool, String)>,
    pub(super) any: bool,
}

impl Filter {
    pub(super) fn matches(&self, v: &Value) -> bool {
        let term = |(path, equal, want): &(String, bool, String)| {
            let mut cur = Some(v);
            for part in path.split('.') {
                cur = cur.and_then(|c| c.get(part));
            }
            let got = cur.map(|c| match c {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            (got.as_deref() == Some(want.as_str())) == *equal
        };
        if self.terms.is_empty() {
            true
        } else if self.any {
            self.terms.iter().any(term)
        } else {
            self.terms.iter().all(term)
        }
    }
}

/// Parses [`Filter`]; `None` when the expression is outside what the double understands
/// (Compute would answer 400 to a malformed one, and the double does too).
pub(super) fn parse_filter(filter: &str) -> Option<Filter> {
    let f = filter.trim();
    if f.is_empty() {
        return Some(Filter {
            terms: Vec::new(),
            any: false,
        });
    }
    let (parts, any): (Vec<&str>, bool) = match (f.contains(" AND "), f.contains(" OR ")) {
        (true, true) => return None,
        (false, true) => (f.split(" OR ").collect(), true),
        _ => (f.split(" AND ").collect(), false),
    };
    let mut terms = Vec::new();
    for part in parts {
        let t = part.trim();
        let t = t
            .strip_prefix('(')
            .and_then(|t| t.strip_suffix(')'))
            .unwrap_or(t)
            .trim();
        let (field, equal, rest) = if let Some((a, b)) = t.split_once("!=") {
            (a, false, b)
        } else {
            let (a, b) = t.split_once('=')?;
            (a, true, b)
        };
        let field = field.trim();
        if field.is_empty()
            || !field
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        {
            return None;
        }
        let rest = rest.trim();
        let value = rest
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(rest);
        if value.contains('"') {
            return None;
        }
        terms.push((field.to_string(), equal, value.to_string()));
    }
    Some(Filter { terms, any })
}

pub(super) fn network_ip(id: u64) -> String {
    format!("10.128.{}.{}", (id / 250) % 250, id % 250 + 2)
}

/// `None` for an empty filter (everything); `Some(names)` for `name = "a"` terms joined by OR.
pub(super) fn parse_name_filter(filter: &str) -> Option<Option<Vec<String>>> {
    let f = filter.trim();
    if f.is_empty() {
        return Some(None);
    }
    let mut names = Vec::new();
    for term in f.split(" OR ") {
        let t = term.trim();
        let t = t
            .strip_prefix('(')
            .and_then(|t| t.strip_suffix(')'))
            .unwrap_or(t)
            .trim();
        let rest = t.strip_prefix("name")?.trim_start();
        let rest = rest.strip_prefix('=')?.trim();
        let value = rest
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(rest);
        if value.is_empty() || value.contains('"') {
            return None;
        }
        names.push(value.to_string());
    }
    Some(Some(names))
}

pub(super) fn paginate(
    items: Vec<Value>,
    query: &[(String, String)],
    page_size: usize,
) -> Result<(Vec<Value>, Option<String>), ComputeError> {
    let param = |n: &str| query_param(query, n);
    let max = match param("maxResults") {
        Some(m) => m
            .parse::<usize>()
            .map_err(|_| err(400, "invalid", "Invalid value for maxResults"))?
            .clamp(1, 500),
        None => 500,
    };
    let start = match param("pageToken") {
        Some(t) if !t.is_empty() => t
            .strip_prefix("page-")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| err(400, "invalid", "Invalid value for pageToken"))?,
        _ => 0,
    };
    let size = max.min(page_size);
    let end = (start + size).min(items.len());
    let page = items
        .get(start.min(items.len())..end)
        .unwrap_or(&[])
        .to_vec();
    let next = (end < items.len()).then(|| format!("page-{end}"));
    Ok((page, next))
}

pub(super) fn suffix(id: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut n = id.wrapping_mul(2_654_435_761) % (36u64.pow(4));
    let mut out = [b'a'; 4];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(out.to_vec()).unwrap()
}

pub(super) fn now_rfc3339() -> String {
    let offset = chrono::FixedOffset::west_opt(7 * 3600).unwrap();
    chrono::Utc::now()
        .with_timezone(&offset)
        .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string()
}

pub(super) fn http_reason(status: u16) -> &'static str {
    match status {
        400 => "BAD REQUEST",
        403 => "FORBIDDEN",
        404 => "NOT FOUND",
        409 => "CONFLICT",
        429 => "TOO MANY REQUESTS",
        500 => "INTERNAL SERVER ERROR",
        503 => "SERVICE UNAVAILABLE",
        _ => "ERROR",
    }
}

/// An error the double answers with, turned into a Compute error body by [`error_response`].
pub(super) struct ComputeError {
    pub(super) status: u16,
    pub(super) reason: &'static str,
    pub(super) message: String,
}

pub(super) fn err(status: u16, reason: &'static str, message: impl Into<String>) -> ComputeError {
    ComputeError {
        status,
        reason,
        message: message.into(),
    }
}

pub(super) fn reply(r: Result<Value, ComputeError>) -> Response {
    match r {
        Ok(v) => ok_json(v),
        Err(e) => error_response(e.status, e.reason, &e.message),
    }
}

/// A Compute-style error: `{"error": {"code", "message", "errors": [{"message", "domain", "reason"}]}}`.
pub(super) fn error_response(status: u16, reason: &str, message: &str) -> Response {
    let domain = if status == 429 || reason.contains("RateLimit") || reason.contains("rateLimit") {
        "usageLimits"
    } else {
        "global"
    };
    let body = json!({"error": {"code": status, "message": message, "errors": [{"message": message, "domain": domain, "reason": reason}]}});
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

pub(super) fn ok_json(v: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        v.to_string(),
    )
        .into_response()
}

pub(super) fn decode_component(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode_component(k), decode_component(v))
        })
        .collect()
}

/// The first value of query parameter `name` (Compute reads the first of repeated ones).
pub(super) fn query_param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_parsing() {
        assert_eq!(parse_name_filter(""), Some(None));
        assert_eq!(
            parse_name_filter("(name = \"a\") OR (name = \"b-1\")"),
            Some(Some(vec!["a".into(), "b-1".into()]))
        );
        assert_eq!(
            parse_name_filter("name = \"a\""),
            Some(Some(vec!["a".into()]))
        );
        assert_eq!(parse_name_filter("labels.x = \"a\""), None);
        assert_eq!(parse_name_filter("name eq a.*"), None);
    }

    #[test]
    fn generic_filters() {
        let f = parse_filter("labels.vespene_worker = \"true\"").unwrap();
        assert!(f.matches(&json!({"labels": {"vespene_worker": "true"}})));
        assert!(!f.matches(&json!({"labels": {"vespene_worker": "false"}})));
        assert!(!f.matches(&json!({"labels": {}})));
        let f = parse_filter("(operationType = \"delete\") AND (status != \"DONE\")").unwrap();
        assert!(f.matches(&json!({"operationType": "delete", "status": "RUNNING"})));
        assert!(!f.matches(&json!({"operationType": "delete", "status": "DONE"})));
        assert!(!f.matches(&json!({"operationType": "insert", "status": "RUNNING"})));
        assert!(parse_filter("(a = \"1\") AND (b = \"2\") OR (c = \"3\")").is_none());
        assert!(parse_filter("labels.x ~ y").is_none());
    }

    #[test]
    fn query_decoding() {
        let q = parse_query(Some(
            "%24alt=json&filter=%28name+%3D+%22a%22%29&pageToken=page-2",
        ));
        assert_eq!(q[0], ("$alt".into(), "json".into()));
        assert_eq!(q[1].1, "(name = \"a\")");
        assert_eq!(q[2].1, "page-2");
        assert_eq!(decode_component("100%"), "100%");
    }

    /// GCE resource names: `[a-z]([-a-z0-9]{0,61}[a-z0-9])?`.
    fn is_gce_name(n: &str) -> bool {
        let b = n.as_bytes();
        (1..=63).contains(&b.len())
            && b[0].is_ascii_lowercase()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[b.len() - 1] != b'-'
    }

    #[test]
    fn suffixes_are_gce_names() {
        for id in 0..200u64 {
            let s = suffix(id);
            assert_eq!(s.len(), 4);
            assert!(is_gce_name(&format!("w-{s}")), "{s}");
        }
    }
}
