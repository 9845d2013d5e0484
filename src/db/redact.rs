//! The database URL in messages: passwords and parameter values never printed, by us or by
//! the driver.

/// Replaces the password of a URL and the value of every query setting with `***`, so a URL
/// can be logged or shown in an error: a secret may hide under any name (`sslpassword`, a
/// mis-cased `Password`, a driver's option we do not know).
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, _)| (k.into_owned(), "***".to_string()))
                .collect();
            if !pairs.is_empty() {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        // Unparseable: show only the scheme-ish prefix, which cannot hold a password.
        Err(_) => raw
            .split("://")
            .next()
            .map(|s| format!("{s}://…"))
            .unwrap_or_default(),
    }
}

/// The connect parameters sqlx's PostgreSQL driver understands; it logs any other one with its
/// value, which may be a secret.
const PG_PARAMS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// The URL without the query parameters the driver would log, and their names.
pub(super) fn drop_unknown_pg_params(raw: &str) -> (String, Vec<String>) {
    let Ok(mut u) = url::Url::parse(raw) else {
        return (raw.to_string(), Vec::new());
    };
    let known = |k: &str| PG_PARAMS.contains(&k) || (k.starts_with("options[") && k.ends_with(']'));
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let ignored: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| !known(k))
        .map(|(k, _)| k.clone())
        .collect();
    if ignored.is_empty() {
        return (raw.to_string(), ignored);
    }
    let kept: Vec<&(String, String)> = pairs.iter().filter(|(k, _)| known(k)).collect();
    if kept.is_empty() {
        u.set_query(None);
    } else {
        u.query_pairs_mut()
            .clear()
            .extend_pairs(kept.iter().map(|(k, v)| (k, v)));
    }
    (u.to_string(), ignored)
}

/// A driver's message about a URL with the URL's password and parameter values replaced.
pub(super) fn scrub(message: &str, raw: &str) -> String {
    let Ok(u) = url::Url::parse(raw) else {
        return message.to_string();
    };
    let mut secrets: Vec<String> = u.query_pairs().map(|(_, v)| v.into_owned()).collect();
    if let Some(p) = u.password() {
        secrets.push(p.to_string());
        secrets.extend(
            url::form_urlencoded::parse(format!("x={p}").as_bytes()).map(|(_, v)| v.into_owned()),
        );
    }
    secrets.retain(|s| s.len() >= 3);
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = message.to_string();
    for s in secrets {
        out = out.replace(&s, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://vespene:s3cret@db.example:5432/vespene"),
            "postgres://vespene:***@db.example:5432/vespene"
        );
        let r = redact_url("postgres://db/x?user=a&password=s3cret");
        assert!(!r.contains("s3cret") && r.contains("password=***"), "{r}");
        let r = redact_url("postgres://db/x?sslpassword=k3y&Password=s3cret&sslmode=require");
        assert_eq!(
            r,
            "postgres://db/x?sslpassword=***&Password=***&sslmode=***"
        );
        assert_eq!(redact_url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
        assert!(!redact_url("pg:// user:s3cret@@").contains("s3cret"));
    }
}
