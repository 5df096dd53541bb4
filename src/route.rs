//! The route table: host + path + method matching.
//!
//! Hosts are exact (`api.example.com`) or wildcard (`*.example.com`, at least one label deeper); paths are
//! exact, prefix (segment-aware: `/api` matches `/api` and `/api/x`, never `/apix`) or templated
//! (`/users/{id}`, one segment per parameter). The most specific route wins, deterministically:
//! exact host > wildcard host (longer suffix first) > any host; then exact path > template (more literal
//! segments first) > prefix (longer first); then a route listing methods > one accepting any; then file
//! order. A path that matches but with the wrong method gives 405 with the allowed methods.
//!
//! A route that lists no methods accepts the [`STANDARD_METHODS`] only. `TRACE` (it reflects the request,
//! credentials included), `CONNECT` (a tunnel, never proxied) and extension methods reach an upstream
//! only through a route that names them.
//!
//! Matching sees the path after [`crate::validate::path::normalize`], so encoded and dot-segment
//! variants of a path cannot reach a less protected route.

use http::Method;
use std::cmp::Reverse;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com` stored as `.example.com`
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    Exact(String),
    Prefix(String),
    Template(Vec<Segment>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param(String),
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub hosts: Vec<HostPattern>,
    pub path: PathPattern,
    /// Empty: any method.
    pub methods: Vec<Method>,
}

/// What a route without a `methods` list accepts.
pub const STANDARD_METHODS: [Method; 7] =
    [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::DELETE, Method::PATCH, Method::OPTIONS];

impl Matcher {
    fn accepts(&self, method: &Method) -> bool {
        if self.methods.is_empty() {
            STANDARD_METHODS.contains(method)
        } else {
            self.methods.contains(method)
        }
    }

    fn allowed(&self) -> &[Method] {
        if self.methods.is_empty() {
            &STANDARD_METHODS
        } else {
            &self.methods
        }
    }
}

/// Path parameters captured by a template, percent-decoded.
pub type Params = Vec<(String, String)>;

pub enum Found<'a, T> {
    Route(&'a T, Params),
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

pub struct RouteTable<T> {
    entries: Vec<(Matcher, T)>,
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let lower = text.to_ascii_lowercase();
        let valid = |s: &str| {
            !s.is_empty()
                && s.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        };
        if let Some(rest) = lower.strip_prefix("*.") {
            if valid(rest) {
                return Ok(HostPattern::Suffix(format!(".{rest}")));
            }
        } else if valid(&lower) {
            return Ok(HostPattern::Exact(lower));
        }
        Err(format!("`{text}` is not a host name or `*.domain` wildcard"))
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h.eq_ignore_ascii_case(host),
            HostPattern::Suffix(s) => {
                host.len() > s.len()
                    && host.is_char_boundary(host.len() - s.len())
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }

    fn rank(&self) -> (u8, usize) {
        match self {
            HostPattern::Exact(h) => (2, h.len()),
            HostPattern::Suffix(s) => (1, s.len()),
        }
    }
}

impl PathPattern {
    pub fn exact(path: &str) -> Result<PathPattern, String> {
        check_path(path)?;
        Ok(PathPattern::Exact(path.to_owned()))
    }

    pub fn prefix(path: &str) -> Result<PathPattern, String> {
        check_path(path)?;
        Ok(PathPattern::Prefix(path.to_owned()))
    }

    pub fn template(path: &str) -> Result<PathPattern, String> {
        check_path(path)?;
        let mut names = Vec::new();
        let segments = path[1..]
            .split('/')
            .map(|seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
                    if names.contains(&name) {
                        return Err(format!("template `{path}` repeats parameter `{name}`"));
                    }
                    names.push(name);
                    Ok(Segment::Param(name.to_owned()))
                }
                Some(_) => Err(format!("template `{path}` has a bad parameter name in `{seg}`")),
                None if seg.contains(['{', '}']) => {
                    Err(format!("template `{path}`: a parameter must be a whole segment, like /users/{{id}}"))
                }
                None => Ok(Segment::Literal(seg.to_owned())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PathPattern::Template(segments))
    }

    fn matches(&self, path: &str, params: &mut Params) -> bool {
        match self {
            PathPattern::Exact(p) => p == path,
            PathPattern::Prefix(p) => {
                path.starts_with(p.as_str())
                    && (p.ends_with('/') || path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
            }
            PathPattern::Template(segments) => {
                let mut parts = path[1..].split('/');
                for seg in segments {
                    let Some(part) = parts.next() else { return false };
                    match seg {
                        Segment::Literal(l) if l == part => {}
                        Segment::Literal(_) => return false,
                        Segment::Param(_) if part.is_empty() => return false,
                        Segment::Param(name) => {
                            let value = percent_encoding::percent_decode_str(part).decode_utf8_lossy();
                            params.push((name.clone(), value.into_owned()));
                        }
                    }
                }
                parts.next().is_none()
            }
        }
    }

    fn rank(&self) -> (u8, usize, usize) {
        match self {
            PathPattern::Exact(p) => (3, p.len(), 0),
            PathPattern::Template(segs) => {
                let literals = segs.iter().filter(|s| matches!(s, Segment::Literal(_))).count();
                (2, literals, segs.len())
            }
            PathPattern::Prefix(p) => (1, p.len(), 0),
        }
    }
}

fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path `{path}` must start with /"));
    }
    if path.bytes().any(|b| b <= b' ' || b == b'?' || b == b'#' || b == b'%' || b >= 0x7f) {
        return Err(format!("path `{path}` may not contain spaces, controls, `?`, `#` or `%`"));
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err(format!("path `{path}` may not contain dot segments"));
    }
    Ok(())
}

impl Matcher {
    fn host_rank(&self, host: Option<&str>) -> Option<(u8, usize)> {
        if self.hosts.is_empty() {
            return Some((0, 0));
        }
        let host = host?;
        self.hosts.iter().filter(|h| h.matches(host)).map(HostPattern::rank).max()
    }
}

impl<T> RouteTable<T> {
    /// Builds the table; entries are ordered once, most specific first.
    pub fn new(entries: Vec<(Matcher, T)>) -> RouteTable<T> {
        let mut entries: Vec<(usize, (Matcher, T))> = entries.into_iter().enumerate().collect();
        entries.sort_by_key(|(i, (m, _))| {
            let host = m.hosts.iter().map(HostPattern::rank).min().unwrap_or((0, 0));
            (Reverse(host), Reverse(m.path.rank()), Reverse(!m.methods.is_empty()), *i)
        });
        RouteTable { entries: entries.into_iter().map(|(_, e)| e).collect() }
    }

    pub fn iter(&self) -> impl Iterator<Item = &(Matcher, T)> {
        self.entries.iter()
    }

    /// `host` without port, `path` normalised, without query.
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method) -> Found<'_, T> {
        let mut best: Option<((u8, usize), usize, Params)> = None;
        let mut allow: Vec<Method> = Vec::new();
        let mut params = Params::new();
        for (i, (m, _)) in self.entries.iter().enumerate() {
            let Some(host_rank) = m.host_rank(host) else { continue };
            if best.as_ref().is_some_and(|(r, _, _)| *r >= host_rank) {
                continue;
            }
            params.clear();
            if !m.path.matches(path, &mut params) {
                continue;
            }
            if m.accepts(method) {
                best = Some((host_rank, i, std::mem::take(&mut params)));
            } else {
                for am in m.allowed() {
                    if !allow.contains(am) {
                        allow.push(am.clone());
                    }
                }
            }
        }
        match best {
            Some((_, i, params)) => Found::Route(&self.entries[i].1, params),
            None if !allow.is_empty() => Found::MethodNotAllowed(allow),
            None => Found::NotFound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(hosts: &[&str], path: PathPattern, methods: &[Method]) -> Matcher {
        Matcher {
            hosts: hosts.iter().map(|h| HostPattern::parse(h).unwrap()).collect(),
            path,
            methods: methods.to_vec(),
        }
    }

    fn name<'a>(f: Found<'a, &'static str>) -> &'static str {
        match f {
            Found::Route(n, _) => n,
            Found::MethodNotAllowed(_) => "405",
            Found::NotFound => "404",
        }
    }

    #[test]
    fn specificity_and_methods() {
        let t = RouteTable::new(vec![
            (m(&[], PathPattern::prefix("/").unwrap(), &[]), "root"),
            (m(&[], PathPattern::prefix("/api").unwrap(), &[]), "api"),
            (m(&[], PathPattern::template("/api/users/{id}").unwrap(), &[Method::GET]), "user"),
            (m(&[], PathPattern::exact("/api/users/me").unwrap(), &[]), "me"),
            (m(&["*.example.com"], PathPattern::prefix("/").unwrap(), &[]), "wild"),
            (m(&["a.example.com"], PathPattern::prefix("/").unwrap(), &[]), "exact-host"),
            (m(&[], PathPattern::exact("/only-post").unwrap(), &[Method::POST]), "post"),
        ]);
        assert_eq!(name(t.find(None, "/x", &Method::GET)), "root");
        assert_eq!(name(t.find(None, "/api", &Method::GET)), "api");
        assert_eq!(name(t.find(None, "/apix", &Method::GET)), "root");
        assert_eq!(name(t.find(None, "/api/users/7", &Method::GET)), "user");
        assert_eq!(name(t.find(None, "/api/users/7", &Method::POST)), "api");
        assert_eq!(name(t.find(None, "/api/users/me", &Method::GET)), "me");
        assert_eq!(name(t.find(Some("b.example.com"), "/api", &Method::GET)), "wild");
        assert_eq!(name(t.find(Some("a.example.com"), "/api", &Method::GET)), "exact-host");
        assert_eq!(name(t.find(Some("example.com"), "/api", &Method::GET)), "api");
        match t.find(None, "/only-post", &Method::GET) {
            Found::Route(..) => {}
            _ => panic!("root prefix catches it"),
        }
        if let Found::Route(_, params) = t.find(None, "/api/users/a%20b", &Method::GET) {
            assert_eq!(params, vec![("id".to_string(), "a b".to_string())]);
        } else {
            panic!("template should match");
        }
    }

    #[test]
    fn not_found_and_405() {
        let t = RouteTable::new(vec![
            (m(&[], PathPattern::exact("/p").unwrap(), &[Method::POST, Method::PUT]), "p"),
            (m(&["h.example"], PathPattern::prefix("/").unwrap(), &[]), "h"),
        ]);
        assert_eq!(name(t.find(None, "/q", &Method::GET)), "404");
        match t.find(None, "/p", &Method::GET) {
            Found::MethodNotAllowed(allow) => assert_eq!(allow, vec![Method::POST, Method::PUT]),
            _ => panic!("expected 405"),
        }
        assert_eq!(name(t.find(Some("h.example"), "/p", &Method::GET)), "h");
    }

    #[test]
    fn routes_without_methods_accept_standard_methods_only() {
        let t = RouteTable::new(vec![(m(&[], PathPattern::prefix("/").unwrap(), &[]), "any")]);
        for method in STANDARD_METHODS {
            assert_eq!(name(t.find(None, "/x", &method)), "any");
        }
        for method in [Method::TRACE, Method::CONNECT, Method::from_bytes(b"PROPFIND").unwrap()] {
            match t.find(None, "/x", &method) {
                Found::MethodNotAllowed(allow) => assert_eq!(allow, STANDARD_METHODS.to_vec()),
                _ => panic!("{method} accepted"),
            }
        }
        let listed = RouteTable::new(vec![(m(&[], PathPattern::prefix("/").unwrap(), &[Method::TRACE]), "trace")]);
        assert_eq!(name(listed.find(None, "/x", &Method::TRACE)), "trace");
    }

    #[test]
    fn bad_patterns() {
        assert!(PathPattern::exact("nope").is_err());
        assert!(PathPattern::prefix("/a/../b").is_err());
        assert!(PathPattern::template("/a/{id}/{id}").is_err());
        assert!(PathPattern::template("/a/x{id}").is_err());
        assert!(HostPattern::parse("*.").is_err());
        assert!(HostPattern::parse("a b").is_err());
        assert!(HostPattern::parse("*.*.x").is_err());
    }
}
