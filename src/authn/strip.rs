//! What of the client's credentials reaches the upstream.
//!
//! Every credential any method of a route reads (an API key header, `Authorization` under a method's
//! scheme, a token cookie, the signature fields) is removed before forwarding, whichever method decided
//! and whether or not the others looked at theirs: an `any_of` route stops at the first method that
//! accepts, so a credential sent beside the accepted one was never verified and must not reach the
//! upstream as if it had been. The one exception is the credential of a method that accepted the request
//! and says `forward_credential: true`.

use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, COOKIE};

/// One place a method reads its credential from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A field that carries the credential whole (`x-api-key`, `signature`, `signature-input`).
    Header(HeaderName),
    /// `Authorization: <scheme> ...`; the scheme in lowercase (schemes are case-insensitive).
    Scheme(Box<str>),
    /// One cookie pair, by its (case-sensitive) name.
    Cookie(Box<str>),
}

impl Credential {
    pub fn scheme(scheme: &str) -> Credential {
        Credential::Scheme(scheme.to_ascii_lowercase().into())
    }

    /// Removes this credential from `headers`: every line of the field, every `Authorization` line of
    /// the scheme, every pair of the cookie (in every `Cookie` line). Other content is left as it was.
    pub fn remove(&self, headers: &mut HeaderMap) {
        match self {
            Credential::Header(name) => {
                headers.remove(name);
            }
            Credential::Scheme(scheme) => {
                edit(
                    headers,
                    &AUTHORIZATION,
                    |v| {
                        if has_scheme(v.as_bytes(), scheme) {
                            Edit::Drop
                        } else {
                            Edit::Keep
                        }
                    },
                )
            }
            Credential::Cookie(name) => edit(headers, &COOKIE, |v| without_cookie(v.as_bytes(), name)),
        }
    }
}

/// Removes every `Authorization` line whose scheme is not one of `kept` (lowercase): on a route that
/// authenticates, a credential no method judged (`Basic ...` beside an accepted API key) never reaches
/// the upstream next to the gateway's identity fields.
pub fn keep_only_schemes(headers: &mut HeaderMap, kept: &[&str]) {
    if !headers.contains_key(AUTHORIZATION) {
        return;
    }
    edit(headers, &AUTHORIZATION, |v| {
        if kept.iter().any(|s| has_scheme(v.as_bytes(), s)) {
            Edit::Keep
        } else {
            Edit::Drop
        }
    })
}

/// Removes the fields whose names fold onto a credential field: a CGI-style upstream reads `X_Api_Key`
/// (or `X-Api_Key`) as `X-Api-Key`, so any `_` spelling of a credential field is that field. Costs one
/// look at the names when none has a `_` (the usual case).
pub fn remove_folded(headers: &mut HeaderMap, is_credential: impl Fn(&HeaderName) -> bool) {
    // A byte loop: names are short, and a substring searcher per name costs more than the names.
    let underscored = |k: &HeaderName| k.as_str().bytes().any(|b| b == b'_');
    if !headers.keys().any(underscored) {
        return;
    }
    let folded: Vec<HeaderName> = headers
        .keys()
        .filter(|k| underscored(k))
        .filter(|k| HeaderName::from_bytes(k.as_str().replace('_', "-").as_bytes()).is_ok_and(|n| is_credential(&n)))
        .cloned()
        .collect();
    for name in folded {
        headers.remove(&name);
    }
}

/// The scheme is the value's first word (up to a space or tab), compared case-insensitively, so `Bearer`,
/// `bearer` and `BEARER\t...` are all the same scheme.
fn has_scheme(value: &[u8], scheme: &str) -> bool {
    let v = value.trim_ascii_start();
    let end = v.iter().position(|&b| b == b' ' || b == b'\t').unwrap_or(v.len());
    v[..end].eq_ignore_ascii_case(scheme.as_bytes())
}

enum Edit {
    Keep,
    Drop,
    Replace(HeaderValue),
}

/// A `Cookie` line without the pairs named `name` (spaces around the name ignored, as lenient upstream
/// parsers do). Read as bytes: a line the gateway could not read as text is still cleaned.
fn without_cookie(line: &[u8], name: &str) -> Edit {
    let named = |pair: &[u8]| {
        let pair = pair.trim_ascii();
        let key = pair.iter().position(|&b| b == b'=').map_or(pair, |i| &pair[..i]);
        key.trim_ascii() == name.as_bytes()
    };
    if !line.split(|&b| b == b';').any(named) {
        return Edit::Keep;
    }
    let kept: Vec<&[u8]> = line.split(|&b| b == b';').filter(|p| !named(p)).map(<[u8]>::trim_ascii).collect();
    let kept: Vec<&[u8]> = kept.into_iter().filter(|p| !p.is_empty()).collect();
    if kept.is_empty() {
        return Edit::Drop;
    }
    match HeaderValue::from_bytes(&kept.join(&b"; "[..])) {
        Ok(v) => Edit::Replace(v),
        Err(_) => Edit::Drop,
    }
}

/// Applies `f` to every line of `name`; allocates only when a line is kept beside one that changes.
fn edit(headers: &mut HeaderMap, name: &HeaderName, f: impl Fn(&HeaderValue) -> Edit) {
    let (mut lines, mut dropped, mut changed) = (0, 0, false);
    for v in headers.get_all(name) {
        lines += 1;
        match f(v) {
            Edit::Keep => {}
            Edit::Drop => (dropped, changed) = (dropped + 1, true),
            Edit::Replace(_) => changed = true,
        }
    }
    if !changed {
        return;
    }
    let old: Vec<HeaderValue> =
        if dropped == lines { Vec::new() } else { headers.get_all(name).iter().cloned().collect() };
    headers.remove(name);
    for value in old {
        match f(&value) {
            Edit::Keep => headers.append(name.clone(), value),
            Edit::Replace(v) => headers.append(name.clone(), v),
            Edit::Drop => false,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::jwt::claims::{bearer, cookie, Presented};

    fn map(lines: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in lines {
            h.append(*n, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    fn values(h: &HeaderMap, name: &str) -> Vec<Vec<u8>> {
        h.get_all(name).iter().map(|v| v.as_bytes().to_vec()).collect()
    }

    #[test]
    fn only_the_forwarded_schemes_stay() {
        let mut h = map(&[("authorization", b"Bearer a.b.c"), ("authorization", b"Basic dXNlcjpwdw==")]);
        keep_only_schemes(&mut h, &["bearer"]);
        assert_eq!(h.get_all(AUTHORIZATION).iter().collect::<Vec<_>>(), ["Bearer a.b.c"]);
        keep_only_schemes(&mut h, &[]);
        assert!(!h.contains_key(AUTHORIZATION));
    }

    #[test]
    fn schemes_in_any_case_and_spacing() {
        let mut h = map(&[
            ("authorization", b"Bearer a.b.c"),
            ("authorization", b"Basic dXNlcjpwdw=="),
            ("authorization", b"  bEaReR\tjunk"),
            ("authorization", b"BEARER"),
        ]);
        Credential::scheme("Bearer").remove(&mut h);
        assert_eq!(values(&h, "authorization"), [b"Basic dXNlcjpwdw==".to_vec()]);
        Credential::scheme("basic").remove(&mut h);
        assert!(h.get("authorization").is_none());
        let mut h = map(&[("authorization", b"Bearerish x")]);
        Credential::scheme("Bearer").remove(&mut h);
        assert_eq!(values(&h, "authorization").len(), 1, "another scheme");
    }

    #[test]
    fn cookies_are_removed_pair_by_pair() {
        let mut h =
            map(&[("cookie", b"a=1; at=tok; b=2"), ("cookie", b" at = other "), ("cookie", b"c=3;at=x;\xff=y")]);
        Credential::Cookie("at".into()).remove(&mut h);
        assert_eq!(values(&h, "cookie"), [b"a=1; b=2".to_vec(), b"c=3; \xff=y".to_vec()]);
        let mut h = map(&[("cookie", b"at=tok")]);
        Credential::Cookie("at".into()).remove(&mut h);
        assert!(h.get("cookie").is_none());
        let mut h = map(&[("cookie", b"At=tok; att=1")]);
        Credential::Cookie("at".into()).remove(&mut h);
        assert_eq!(values(&h, "cookie"), [b"At=tok; att=1".to_vec()], "names are case-sensitive and exact");
    }

    #[test]
    fn folded_spellings_are_the_same_field() {
        let mut h = map(&[("x_api_key", b"k2"), ("x-api_key", b"k3"), ("x_other", b"1"), ("x-other", b"2")]);
        remove_folded(&mut h, |n| n == "x-api-key");
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["x-other", "x_other"]);
    }

    fn parts(h: HeaderMap) -> http::request::Parts {
        let mut p = http::Request::new(()).into_parts().0;
        p.headers = h;
        p
    }

    proptest::proptest! {
        /// Whatever the bearer reader would take a token from, the stripping removes.
        #[test]
        fn a_bearer_token_the_gateway_reads_never_survives(
            scheme in "(Bearer|bearer|BEARER|Basic|Bearerx|ApiKey|)",
            sep in "( |  |\t|)",
            token in proptest::collection::vec(proptest::sample::select(b"aZ09-._~+/= \t\x80\xff!;".to_vec()), 0..30),
            other in proptest::option::of("(Basic dTpw|Digest x)"),
        ) {
            let mut raw = scheme.into_bytes();
            raw.extend_from_slice(sep.as_bytes());
            raw.extend_from_slice(&token);
            let Ok(value) = HeaderValue::from_bytes(&raw) else { return Ok(()) };
            let mut h = HeaderMap::new();
            h.append(AUTHORIZATION, value);
            if let Some(o) = &other {
                h.append(AUTHORIZATION, HeaderValue::from_str(o).unwrap());
            }
            Credential::scheme("Bearer").remove(&mut h);
            proptest::prop_assert!(!matches!(bearer(&parts(h.clone())), Presented::Token(_)));
            proptest::prop_assert!(h.get_all(AUTHORIZATION).iter().all(|v| !has_scheme(v.as_bytes(), "bearer")));
            // Lines of other schemes stay.
            let kept: Vec<_> = h.get_all(AUTHORIZATION).iter().map(|v| v.as_bytes().to_vec()).collect();
            if let Some(o) = &other {
                proptest::prop_assert!(kept.contains(&o.as_bytes().to_vec()));
            }
        }

        /// Whatever cookie the cookie reader would take a token from, the stripping removes; the other
        /// pairs stay, in order.
        #[test]
        fn a_token_cookie_the_gateway_reads_never_survives(
            pairs in proptest::collection::vec(("(at|At|a|at |b)", "[a-z0-9.\"]{0,8}"), 0..6),
            sep in "(;|; |;  )",
        ) {
            let line = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(&sep);
            let Ok(value) = HeaderValue::from_str(&line) else { return Ok(()) };
            let mut h = HeaderMap::new();
            h.append(COOKIE, value);
            Credential::Cookie("at".into()).remove(&mut h);
            let left = parts(h.clone());
            proptest::prop_assert_eq!(cookie(&left, "at"), Presented::Absent);
            let want: Vec<String> =
                pairs.iter().filter(|(k, _)| k.trim() != "at").map(|(k, v)| format!("{}={v}", k.trim())).collect();
            let got: Vec<String> = h
                .get_all(COOKIE)
                .iter()
                .flat_map(|v| v.to_str().unwrap().split(';').map(|p| p.trim().to_owned()).collect::<Vec<_>>())
                .filter(|p| !p.is_empty())
                .collect();
            let untouched = pairs.iter().all(|(k, _)| k.trim() != "at");
            if !untouched {
                proptest::prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn whole_fields() {
        let mut h = map(&[("signature", b"sig1=:AA==:"), ("signature", b"sig2=:AA==:"), ("x-other", b"1")]);
        Credential::Header(HeaderName::from_static("signature")).remove(&mut h);
        assert!(h.get("signature").is_none());
        assert_eq!(h.len(), 1);
    }
}
