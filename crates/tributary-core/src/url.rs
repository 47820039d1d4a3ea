//! URLs as they may be shown: in messages, logs and errors.

/// `url` with the password of its user info (`scheme://user:pw@host`)
/// replaced by `***`; everything else as given.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{path}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacted_urls_keep_everything_but_the_password() {
        assert_eq!(
            redact_url("postgres://app:p@ss:w@rd@db.example:5432/prod?sslmode=require"),
            "postgres://app:***@db.example:5432/prod?sslmode=require"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_url("postgress://u:pw@h/d"), "postgress://u:***@h/d");
        assert_eq!(
            redact_url("https://k:tok@api.example/v2"),
            "https://k:***@api.example/v2"
        );
        assert_eq!(redact_url("./t.db"), "./t.db");
    }
}
