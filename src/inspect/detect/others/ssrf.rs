//! SSRF and remote file inclusion: URLs in values whose host is loopback, private, link-local or a
//! cloud metadata service (in any spelling `addr` understands), URLs with schemes a server-side
//! fetcher should never follow (`gopher:`, `dict:`, `file:`, `ldap:`), wildcard-DNS names that embed
//! an internal address, and (level 2) URLs to remote scripts in include-like values.
//!
//! A URL is found at each `scheme:` followed by slashes (either kind, one or more, as lenient
//! fetchers accept), or a value starting with `//`. Its host is what follows the last `@` of the
//! authority, which ends at the first `/`, `\`, `?` or `#` (after decoding, so `%23@` splits there).

mod addr;

use super::super::{Category, Rule};
use super::text::is_word;
use super::Out;
use addr::Class;

static LOOPBACK: Rule =
    Rule { id: 5001, category: Category::Ssrf, paranoia: 1, score: 5, name: "URL to a loopback address or localhost" };
static METADATA: Rule =
    Rule { id: 5002, category: Category::Ssrf, paranoia: 1, score: 5, name: "URL to a cloud metadata service" };
static PRIVATE: Rule =
    Rule { id: 5003, category: Category::Ssrf, paranoia: 1, score: 5, name: "URL to a private or link-local address" };
static SCHEME: Rule = Rule {
    id: 5004,
    category: Category::Ssrf,
    paranoia: 1,
    score: 5,
    name: "URL with a scheme a fetcher should not follow (gopher, dict, file, ldap, tftp, jar, netdoc)",
};
static REBINDING: Rule = Rule {
    id: 5005,
    category: Category::Ssrf,
    paranoia: 1,
    score: 5,
    name: "wildcard-DNS name embedding an internal address",
};
static OBFUSCATED: Rule = Rule {
    id: 5101,
    category: Category::Ssrf,
    paranoia: 2,
    score: 5,
    name: "URL with an IP address in decimal, octal, hex or short form",
};
static INTERNAL_NAME: Rule = Rule {
    id: 5102,
    category: Category::Ssrf,
    paranoia: 2,
    score: 3,
    name: "URL to an internal name or reserved address",
};
static REMOTE_SCRIPT: Rule = Rule {
    id: 5103,
    category: Category::Ssrf,
    paranoia: 2,
    score: 5,
    name: "remote file inclusion: a value that is a URL to a script or ends with '?'",
};
static IP_LITERAL: Rule =
    Rule { id: 5201, category: Category::Ssrf, paranoia: 3, score: 3, name: "URL with an IP literal host" };

pub(super) const TRIGGERS: &[&str] = &[":/", ":\\", "//"];

/// The longest authority we read.
const MAX_AUTHORITY: usize = 320;

pub(super) fn scan(out: &mut Out<'_, '_>) {
    let v = out.v;
    let b = v.decoded.as_bytes();
    out.work(b.len());
    let lead = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    if b.get(lead..lead + 2) == Some(b"//") {
        url(b, lead, lead + 2, out);
    }
    let mut i = 0;
    while let Some(p) = memchr::memchr(b':', b.get(i..).unwrap_or_default()) {
        let colon = i + p;
        i = colon + 1;
        let slashes = b.get(colon + 1..).unwrap_or_default().iter().take_while(|&&c| c == b'/' || c == b'\\').count();
        if slashes == 0 {
            continue;
        }
        let Some(start) = scheme_start(b, colon) else { continue };
        let scheme = b.get(start..colon).unwrap_or_default();
        if dangerous(scheme) {
            out.hit(&SCHEME);
        }
        i = url(b, start, colon + 1 + slashes, out).max(i);
    }
}

/// The start of the scheme ending at `colon` (letters, digits, `+.-`, starting with a letter, not
/// preceded by a word byte), if any.
fn scheme_start(b: &[u8], colon: usize) -> Option<usize> {
    let mut s = colon;
    while s > 0 && colon - s < 16 {
        let c = b.get(s - 1).copied()?;
        if c.is_ascii_alphanumeric() || matches!(c, b'+' | b'.' | b'-') {
            s -= 1;
        } else {
            break;
        }
    }
    let first = b.get(s).copied()?;
    (s < colon && first.is_ascii_alphabetic() && !(s > 0 && b.get(s - 1).copied().is_some_and(is_word))).then_some(s)
}

fn dangerous(scheme: &[u8]) -> bool {
    const SCHEMES: &[&[u8]] =
        &[b"gopher", b"dict", b"file", b"ldap", b"ldaps", b"ldapi", b"tftp", b"jar", b"netdoc", b"smb", b"telnet"];
    SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(scheme))
}

/// Judges the URL whose authority starts at `auth` (the value's URL starts at `url_start`); returns
/// the index after the authority.
fn url(b: &[u8], url_start: usize, auth: usize, out: &mut Out<'_, '_>) -> usize {
    let mut end = auth;
    while let Some(&c) = b.get(end) {
        if end - auth >= MAX_AUTHORITY
            || matches!(c, b'/' | b'\\' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'`' | b'{' | b'}' | b'|' | b'^')
            || c.is_ascii_whitespace()
        {
            break;
        }
        end += 1;
    }
    out.work(end - auth);
    let authority = b.get(auth..end).unwrap_or_default();
    let host_start = authority.iter().rposition(|&c| c == b'@').map_or(0, |p| p + 1);
    let rest = authority.get(host_start..).unwrap_or_default();
    let host = if rest.first() == Some(&b'[') {
        rest.iter().position(|&c| c == b']').and_then(|p| rest.get(..=p)).unwrap_or(rest)
    } else {
        let stop = rest
            .iter()
            .position(|&c| c.is_ascii() && !(c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b'~')))
            .unwrap_or(rest.len());
        rest.get(..stop).unwrap_or_default()
    };
    let Ok(host) = std::str::from_utf8(host) else { return end };
    if host.is_empty() {
        return end;
    }
    let h = addr::classify(host);
    match h.class {
        Class::Loopback => out.hit(&LOOPBACK),
        Class::Metadata => out.hit(&METADATA),
        Class::Private => out.hit(&PRIVATE),
        Class::Reserved => out.hit(&INTERNAL_NAME),
        Class::Public => {
            let leading = b.get(..url_start).is_some_and(|s| s.iter().all(u8::is_ascii_whitespace));
            if leading && remote_script(b.get(end..).unwrap_or_default()) {
                out.hit(&REMOTE_SCRIPT);
            }
        }
    }
    if h.rebinding {
        out.hit(&REBINDING);
    }
    if h.obfuscated {
        out.hit(&OBFUSCATED);
    }
    if h.literal {
        out.hit(&IP_LITERAL);
    }
    end
}

/// Whether the rest of a URL (path and query) ends with `?` or names a script file.
fn remote_script(rest: &[u8]) -> bool {
    let rest = rest.trim_ascii_end();
    if rest.ends_with(b"?") || rest.ends_with(b"\0") {
        return true;
    }
    let path_end = rest.iter().position(|&c| c == b'?' || c == b'#').unwrap_or(rest.len());
    let path = rest.get(..path_end).unwrap_or_default();
    const SCRIPTS: &[&[u8]] =
        &[b".php", b".txt", b".inc", b".phtml", b".jsp", b".asp", b".aspx", b".pl", b".cgi", b".sh"];
    SCRIPTS.iter().any(|ext| {
        path.len() > ext.len() && path.get(path.len() - ext.len()..).is_some_and(|e| e.eq_ignore_ascii_case(ext))
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{blocks, ids, ids_at};
    use crate::inspect::detect::TargetKind;

    #[test]
    fn internal_urls_are_detected_at_level_1() {
        for p in [
            "http://127.0.0.1/admin",
            "http://localhost:8080/",
            "https://LOCALHOST/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f000001/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://0/",
            "http://[::1]/",
            "http://[::]:80/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[0:0:0:0:0:ffff:127.0.0.1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://[fd00:ec2::254]/latest/",
            "http://100.100.100.200/latest/user-data",
            "http://10.0.0.1:6379/",
            "http://192.168.1.1/",
            "http://172.16.0.10:10250/pods",
            "http://example.com@127.0.0.1/",
            "http://127.0.0.1#@example.com/",
            "http://user:pass@[::1]:22/",
            "//127.0.0.1/x",
            "gopher://example.com:70/_x",
            "dict://example.com:11211/stats",
            "ldap://example.com/o=x",
            "file:///etc/passwd",
            "tftp://example.com/x",
            "http://127.0.0.1.nip.io/",
            "http://①②⑦.⓪.⓪.①/",
            "url=http:\\\\127.0.0.1\\admin",
            "see http:/localhost/x",
            "{\"callback\":\"http://169.254.169.254/\"}",
        ] {
            assert!(blocks(p, TargetKind::QueryValue), "{p:?}: {:?}", ids_at(p, TargetKind::QueryValue, 4));
        }
    }

    #[test]
    fn public_urls_pass_at_level_1() {
        for p in [
            "https://example.com/a/b?c=d",
            "http://8.8.8.8/",
            "https://api.github.com/repos",
            "Visit https://www.wikipedia.org/wiki/Localhost for more",
            "mailto:someone@example.com",
            "Time: 10:30 // later",
            "C:\\Users\\me",
            "https://example.com/docs/readme.txt",
            "ftp://ftp.example.org/pub/",
            "https://172.32.0.1/",
        ] {
            assert!(!blocks(p, TargetKind::JsonString), "{p:?}: {:?}", ids(p));
        }
    }

    #[test]
    fn looser_levels_catch_more() {
        assert!(ids_at("http://evil.example/shell.txt?", TargetKind::QueryValue, 2).contains(&5103));
        assert!(ids_at("http://evil.example/c99.php", TargetKind::QueryValue, 2).contains(&5103));
        assert!(ids_at("http://3627734062/", TargetKind::QueryValue, 2).contains(&5101));
        assert!(ids_at("http://db.internal/", TargetKind::QueryValue, 2).contains(&5102));
        assert!(ids_at("http://8.8.8.8/", TargetKind::QueryValue, 3).contains(&5201));
        assert!(ids_at("http://8.8.8.8/", TargetKind::QueryValue, 2).is_empty());
    }
}
