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

use crate::exchange::Params;
use http::Method;
use std::borrow::Cow;
use std::cmp::Reverse;
use std::sync::Arc;

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
    /// The name is shared with the [`Params`] of every request the template matches.
    Param(Arc<str>),
}

/// How a route reads the spelling of a path. The defaults are the safe ones: a route's protection covers
/// every spelling an upstream framework might treat as the same resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathOptions {
    /// `false` (default): literal path text matches in any ASCII case, so `/ADMIN` reaches the `/admin`
    /// route (and its authentication), as it would reach a case-insensitive upstream.
    pub case_sensitive: bool,
    /// `false` (default): one trailing slash is ignored on exact and template routes (`/admin/` is
    /// `/admin`), and a prefix `/api/` also matches `/api`.
    pub strict_trailing_slash: bool,
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub hosts: Vec<HostPattern>,
    pub path: PathPattern,
    /// Empty: any of the [`STANDARD_METHODS`].
    pub methods: Vec<Method>,
    pub options: PathOptions,
}

/// What a route without a `methods` list accepts.
pub const STANDARD_METHODS: [Method; 7] =
    [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::DELETE, Method::PATCH, Method::OPTIONS];

impl Matcher {
    /// A matcher with the default (safe) path options.
    pub fn new(hosts: Vec<HostPattern>, path: PathPattern, methods: Vec<Method>) -> Matcher {
        Matcher { hosts, path, methods, options: PathOptions::default() }
    }

    fn accepts(&self, method: &Method) -> bool {
        if self.methods.is_empty() {
            STANDARD_METHODS.contains(method)
        } else {
            self.methods.contains(method)
        }
    }

    pub fn allowed(&self) -> &[Method] {
        if self.methods.is_empty() {
            &STANDARD_METHODS
        } else {
            &self.methods
        }
    }

    /// How well this route's hosts match `host`: the best of its patterns that match, per request.
    pub fn host_rank(&self, host: Option<&str>) -> Option<HostRank> {
        if self.hosts.is_empty() {
            return Some((0, 0));
        }
        let host = host?;
        self.hosts.iter().filter(|h| h.matches(host)).map(HostPattern::rank).max()
    }

    /// The best host rank this route can reach for any host.
    fn best_host_rank(&self) -> HostRank {
        self.hosts.iter().map(HostPattern::rank).max().unwrap_or((0, 0))
    }
}

/// Host specificity: exact (2) > wildcard (1, longer suffix first) > any host (0).
pub type HostRank = (u8, usize);
/// Path specificity: exact (3) > template (2, more literal segments first) > prefix (1, longer first).
pub type PathRank = (u8, usize, usize);

pub enum Found<'a, T> {
    /// The route; its path parameters are in the `params` given to [`RouteTable::find`].
    Route(&'a T),
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

struct Entry<T> {
    matcher: Matcher,
    value: T,
    /// Position in the file: the last tie-breaker.
    index: usize,
    /// The best (host, path) rank this entry can reach; entries are sorted on it, best first, so a
    /// search stops once no later entry can beat what it found.
    bound: (HostRank, PathRank),
}

impl<T> Entry<T> {
    /// Among routes equally specific for a request and accepting its method: one listing methods
    /// first, then file order.
    fn preference(&self) -> (bool, usize) {
        (self.matcher.methods.is_empty(), self.index)
    }
}

pub struct RouteTable<T> {
    entries: Vec<Entry<T>>,
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let lower = text.to_ascii_lowercase();
        // A trailing dot names the same host (`api.example.com.`): requests are matched without it.
        let lower = lower.strip_suffix('.').unwrap_or(&lower).to_owned();
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
                host.len() > s.len() && host.as_bytes()[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
        }
    }

    /// Exact names all rank alike (only equal names can match one host); wildcards by suffix length.
    fn rank(&self) -> HostRank {
        match self {
            HostPattern::Exact(_) => (2, 0),
            HostPattern::Suffix(s) => (1, s.len()),
        }
    }
}

/// `path` without one trailing slash (the root stays `/`).
fn trim_slash(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some(t) if !t.is_empty() => t,
        _ => path,
    }
}

/// Whether two pieces of path text are the same under the route's case rule. Exact equality first:
/// most requests spell a path as the route does, and comparing bytes is cheaper than folding them.
fn same(a: &str, b: &str, case_sensitive: bool) -> bool {
    a == b || (!case_sensitive && a.eq_ignore_ascii_case(b))
}

fn has_prefix(path: &str, prefix: &str, case_sensitive: bool) -> bool {
    path.len() >= prefix.len() && {
        let head = &path.as_bytes()[..prefix.len()];
        if case_sensitive {
            head == prefix.as_bytes()
        } else {
            head.eq_ignore_ascii_case(prefix.as_bytes())
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
                    Ok(Segment::Param(name.into()))
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

    /// The parameters a template captures (none for exact and prefix patterns).
    pub fn param_names(&self) -> Vec<&str> {
        match self {
            PathPattern::Template(segments) => segments
                .iter()
                .filter_map(|s| match s {
                    Segment::Param(name) => Some(&**name),
                    Segment::Literal(_) => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Whether `path` (normalised: no dot or empty segments) is this pattern under `options`. A
    /// template appends what it captures to `params` (also on a miss, up to the segment that missed).
    pub fn matches(&self, path: &str, options: PathOptions, params: &mut Params) -> bool {
        let cs = options.case_sensitive;
        let loose = !options.strict_trailing_slash;
        match self {
            PathPattern::Exact(p) if loose => same(trim_slash(p), trim_slash(path), cs),
            PathPattern::Exact(p) => same(p, path, cs),
            PathPattern::Prefix(p) => {
                let under = has_prefix(path, p, cs)
                    && (p.ends_with('/') || path.len() == p.len() || path.as_bytes()[p.len()] == b'/');
                // `/api/` as a prefix also covers `/api` itself unless slashes are strict.
                under || (loose && p.len() > 1 && p.ends_with('/') && same(trim_slash(p), path, cs))
            }
            PathPattern::Template(segments) => {
                let (path, segments) = if loose {
                    let segs = match segments.split_last() {
                        Some((Segment::Literal(l), rest)) if l.is_empty() && !rest.is_empty() => rest,
                        _ => &segments[..],
                    };
                    (trim_slash(path), segs)
                } else {
                    (path, &segments[..])
                };
                let mut rest = Some(&path[1..]);
                for seg in segments {
                    let Some(part) = next_segment(&mut rest) else { return false };
                    match seg {
                        Segment::Literal(l) if same(l, part, cs) => {}
                        Segment::Literal(_) => return false,
                        Segment::Param(_) if part.is_empty() => return false,
                        Segment::Param(name) => params.push(name.clone(), &decoded(part)),
                    }
                }
                rest.is_none()
            }
        }
    }

    pub fn rank(&self) -> PathRank {
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

/// The next `/`-separated segment of `rest` (`None` once the last one was taken), as `str::split`
/// would give it. A byte scan: segments are short, and the searcher behind `split` costs more to set
/// up than to run on them.
fn next_segment<'p>(rest: &mut Option<&'p str>) -> Option<&'p str> {
    let text = (*rest)?;
    match text.bytes().position(|b| b == b'/') {
        Some(i) => {
            *rest = Some(&text[i + 1..]);
            Some(&text[..i])
        }
        None => {
            *rest = None;
            Some(text)
        }
    }
}

/// A parameter's value: its segment, percent-decoded (invalid UTF-8 replaced) only if it has a `%`.
fn decoded(part: &str) -> Cow<'_, str> {
    if part.as_bytes().contains(&b'%') {
        percent_encoding::percent_decode_str(part).decode_utf8_lossy()
    } else {
        Cow::Borrowed(part)
    }
}

fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path `{path}` must start with /"));
    }
    if path.bytes().any(|b| b <= b' ' || b == b'?' || b == b'#' || b == b'%' || b == b';' || b >= 0x7f) {
        return Err(format!("path `{path}` may not contain spaces, controls, `?`, `#`, `%` or `;`"));
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err(format!("path `{path}` may not contain dot segments"));
    }
    if path.contains("//") {
        return Err(format!("path `{path}` may not contain empty segments (`//`): requests have them merged"));
    }
    Ok(())
}

impl<T> RouteTable<T> {
    /// Builds the table; entries are ordered once by the best rank each can reach.
    pub fn new(entries: Vec<(Matcher, T)>) -> RouteTable<T> {
        let mut entries: Vec<Entry<T>> = entries
            .into_iter()
            .enumerate()
            .map(|(index, (matcher, value))| {
                let bound = (matcher.best_host_rank(), matcher.path.rank());
                Entry { matcher, value, index, bound }
            })
            .collect();
        entries.sort_by_key(|e| (Reverse(e.bound), e.preference()));
        RouteTable { entries }
    }

    /// The routes in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&Matcher, &T)> {
        let mut all: Vec<&Entry<T>> = self.entries.iter().collect();
        all.sort_by_key(|e| e.index);
        all.into_iter().map(|e| (&e.matcher, &e.value))
    }

    /// The routes a request for `host` can reach, most specific first (the order `find` applies for
    /// that host, before looking at the path's match).
    pub fn order_for(&self, host: Option<&str>) -> Vec<(&Matcher, &T)> {
        let mut reachable: Vec<(&Entry<T>, HostRank)> =
            self.entries.iter().filter_map(|e| Some((e, e.matcher.host_rank(host)?))).collect();
        reachable.sort_by_key(|(e, h)| (Reverse((*h, e.matcher.path.rank())), e.preference()));
        reachable.into_iter().map(|(e, _)| (&e.matcher, &e.value)).collect()
    }

    /// `host` without port (a trailing dot is ignored), `path` normalised, without query. The chosen
    /// route's path parameters are left in `params` (cleared first; a buffer the caller keeps, so a
    /// match allocates nothing).
    ///
    /// The most specific match for this host and path decides: the highest (host rank, path rank)
    /// among the routes whose host and path match. Among the routes at that rank, one accepting the
    /// method is chosen (a route listing methods first, then file order); when none accepts it the
    /// answer is 405 with their methods, never a less specific route.
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method, params: &mut Params) -> Found<'_, T> {
        let host = host.map(|h| h.strip_suffix('.').unwrap_or(h));
        let mut top: Option<(HostRank, PathRank)> = None;
        let mut chosen: Option<usize> = None;
        let mut allow: Vec<Method> = Vec::new();
        // The entry whose captures `params` holds: the last one tried.
        let mut captured = None;
        params.clear();
        for (i, e) in self.entries.iter().enumerate() {
            if top.is_some_and(|t| e.bound < t) {
                break;
            }
            let Some(host_rank) = e.matcher.host_rank(host) else { continue };
            let key = (host_rank, e.matcher.path.rank());
            if top.is_some_and(|t| key < t) {
                continue;
            }
            params.clear();
            captured = Some(i);
            if !e.matcher.path.matches(path, e.matcher.options, params) {
                continue;
            }
            if top.is_none_or(|t| key > t) {
                top = Some(key);
                chosen = None;
                allow.clear();
            }
            if e.matcher.accepts(method) {
                if chosen.is_none_or(|c| e.preference() < self.entries[c].preference()) {
                    chosen = Some(i);
                }
            } else {
                for am in e.matcher.allowed() {
                    if !allow.contains(am) {
                        allow.push(am.clone());
                    }
                }
            }
        }
        if captured != chosen {
            // Another entry was tried after the chosen one (or none was chosen): the chosen one's
            // captures again, which match as they did.
            params.clear();
            if let Some(e) = chosen.map(|c| &self.entries[c]) {
                e.matcher.path.matches(path, e.matcher.options, params);
            }
        }
        match (chosen, top) {
            (Some(i), _) => Found::Route(&self.entries[i].value),
            (None, Some(_)) => Found::MethodNotAllowed(allow),
            (None, None) => Found::NotFound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(hosts: &[&str], path: PathPattern, methods: &[Method]) -> Matcher {
        Matcher::new(hosts.iter().map(|h| HostPattern::parse(h).unwrap()).collect(), path, methods.to_vec())
    }

    fn name<'a>(f: Found<'a, &'static str>) -> &'static str {
        match f {
            Found::Route(n) => n,
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
        assert_eq!(name(t.find(None, "/x", &Method::GET, &mut Params::new())), "root");
        assert_eq!(name(t.find(None, "/api", &Method::GET, &mut Params::new())), "api");
        assert_eq!(name(t.find(None, "/apix", &Method::GET, &mut Params::new())), "root");
        assert_eq!(name(t.find(None, "/api/users/7", &Method::GET, &mut Params::new())), "user");
        // the template is the most specific match and takes GET only: 405, never the weaker prefix
        assert_eq!(name(t.find(None, "/api/users/7", &Method::POST, &mut Params::new())), "405");
        assert_eq!(name(t.find(None, "/api/users/me", &Method::GET, &mut Params::new())), "me");
        assert_eq!(name(t.find(Some("b.example.com"), "/api", &Method::GET, &mut Params::new())), "wild");
        assert_eq!(name(t.find(Some("a.example.com"), "/api", &Method::GET, &mut Params::new())), "exact-host");
        assert_eq!(name(t.find(Some("example.com"), "/api", &Method::GET, &mut Params::new())), "api");
        match t.find(None, "/only-post", &Method::GET, &mut Params::new()) {
            Found::MethodNotAllowed(allow) => assert_eq!(allow, vec![Method::POST]),
            _ => panic!("the exact route decides: 405, not the root prefix"),
        }
        let mut params = Params::new();
        assert_eq!(name(t.find(None, "/api/users/a%20b", &Method::GET, &mut params)), "user");
        assert_eq!(params.iter().collect::<Vec<_>>(), [("id", "a b")]);
        assert_eq!(name(t.find(None, "/x", &Method::GET, &mut params)), "root");
        assert!(params.is_empty(), "a route without parameters leaves none from the last request");
    }

    /// The parameters are the chosen route's, even when an equally specific route is tried after it.
    #[test]
    fn params_are_the_chosen_routes() {
        let t = RouteTable::new(vec![
            (m(&[], PathPattern::template("/a/{q}").unwrap(), &[]), "any-method"),
            (m(&[], PathPattern::template("/{p}/x").unwrap(), &[Method::GET]), "get"),
        ]);
        let mut params = Params::new();
        assert_eq!(name(t.find(None, "/a/x", &Method::GET, &mut params)), "get", "listing methods wins");
        assert_eq!(params.iter().collect::<Vec<_>>(), [("p", "a")]);
        assert_eq!(name(t.find(None, "/a/x", &Method::POST, &mut params)), "any-method");
        assert_eq!(params.iter().collect::<Vec<_>>(), [("q", "x")]);
        assert_eq!(name(t.find(None, "/b/y", &Method::GET, &mut params)), "404");
        assert!(params.is_empty());
        assert_eq!(name(t.find(None, "/b/x", &Method::DELETE, &mut params)), "405");
        assert!(params.is_empty(), "no route, no parameters");
    }

    #[test]
    fn not_found_and_405() {
        let t = RouteTable::new(vec![
            (m(&[], PathPattern::exact("/p").unwrap(), &[Method::POST, Method::PUT]), "p"),
            (m(&["h.example"], PathPattern::prefix("/").unwrap(), &[]), "h"),
        ]);
        assert_eq!(name(t.find(None, "/q", &Method::GET, &mut Params::new())), "404");
        match t.find(None, "/p", &Method::GET, &mut Params::new()) {
            Found::MethodNotAllowed(allow) => assert_eq!(allow, vec![Method::POST, Method::PUT]),
            _ => panic!("expected 405"),
        }
        assert_eq!(name(t.find(Some("h.example"), "/p", &Method::GET, &mut Params::new())), "h");
    }

    /// Issue 9, item 1: a route listing several hosts ranks by the host that matched, not its weakest.
    #[test]
    fn multi_host_route_ranks_by_the_matching_host() {
        let t = RouteTable::new(vec![
            (m(&["api.example.com"], PathPattern::prefix("/").unwrap(), &[]), "site"),
            (m(&["api.example.com", "admin.io"], PathPattern::prefix("/admin").unwrap(), &[]), "admin"),
        ]);
        assert_eq!(name(t.find(Some("api.example.com"), "/admin/x", &Method::GET, &mut Params::new())), "admin");
        assert_eq!(name(t.find(Some("admin.io"), "/admin/x", &Method::GET, &mut Params::new())), "admin");
        assert_eq!(name(t.find(Some("api.example.com."), "/admin/x", &Method::GET, &mut Params::new())), "admin");
        assert_eq!(name(t.find(Some("API.Example.COM"), "/admin", &Method::GET, &mut Params::new())), "admin");
        assert_eq!(name(t.find(Some("api.example.com"), "/x", &Method::GET, &mut Params::new())), "site");
        let order: Vec<_> = t.order_for(Some("api.example.com")).into_iter().map(|(_, n)| *n).collect();
        assert_eq!(order, ["admin", "site"]);
    }

    /// Issue 9, item 2: a method the most specific route refuses never falls through to a weaker one.
    #[test]
    fn method_does_not_fall_through() {
        let t = RouteTable::new(vec![
            (m(&["ro.io"], PathPattern::prefix("/data").unwrap(), &[Method::GET]), "ro"),
            (m(&["ro.io"], PathPattern::prefix("/").unwrap(), &[]), "ro-public"),
            (m(&[], PathPattern::exact("/p").unwrap(), &[Method::GET]), "p-get"),
            (m(&[], PathPattern::exact("/p").unwrap(), &[Method::POST]), "p-post"),
        ]);
        match t.find(Some("ro.io"), "/data/x", &Method::DELETE, &mut Params::new()) {
            Found::MethodNotAllowed(allow) => assert_eq!(allow, vec![Method::GET]),
            _ => panic!("DELETE must be 405"),
        }
        assert_eq!(name(t.find(Some("ro.io"), "/data/x", &Method::GET, &mut Params::new())), "ro");
        // equally specific routes share the path: the method picks among them
        assert_eq!(name(t.find(None, "/p", &Method::POST, &mut Params::new())), "p-post");
        assert_eq!(name(t.find(None, "/p", &Method::GET, &mut Params::new())), "p-get");
        match t.find(None, "/p", &Method::PUT, &mut Params::new()) {
            Found::MethodNotAllowed(allow) => assert_eq!(allow, vec![Method::GET, Method::POST]),
            _ => panic!("PUT must be 405"),
        }
    }

    /// Issue 9, item 7: trailing slashes and case are route options with safe defaults.
    #[test]
    fn trailing_slash_and_case_options() {
        let strict = PathOptions { case_sensitive: true, strict_trailing_slash: true };
        let with = |path: PathPattern, options| Matcher { options, ..m(&[], path, &[]) };
        let t = RouteTable::new(vec![
            (m(&[], PathPattern::exact("/admin").unwrap(), &[]), "admin"),
            (m(&[], PathPattern::template("/users/{id}").unwrap(), &[]), "user"),
            (m(&[], PathPattern::prefix("/docs/").unwrap(), &[]), "docs"),
            (with(PathPattern::exact("/Strict").unwrap(), strict), "strict"),
            (m(&[], PathPattern::prefix("/").unwrap(), &[]), "root"),
        ]);
        for (path, want) in [
            ("/admin", "admin"),
            ("/admin/", "admin"),
            ("/ADMIN", "admin"),
            ("/Admin/", "admin"),
            ("/users/7", "user"),
            ("/users/7/", "user"),
            ("/USERS/Ab", "user"),
            ("/docs", "docs"),
            ("/DOCS/x", "docs"),
            ("/Strict", "strict"),
            ("/strict", "root"),
            ("/Strict/", "root"),
            ("/users", "root"),
        ] {
            assert_eq!(name(t.find(None, path, &Method::GET, &mut Params::new())), want, "{path}");
        }
        let mut params = Params::new();
        assert_eq!(name(t.find(None, "/USERS/AbC/", &Method::GET, &mut params)), "user");
        assert_eq!(params.iter().collect::<Vec<_>>(), [("id", "AbC")]);
    }

    #[test]
    fn routes_without_methods_accept_standard_methods_only() {
        let t = RouteTable::new(vec![(m(&[], PathPattern::prefix("/").unwrap(), &[]), "any")]);
        for method in STANDARD_METHODS {
            assert_eq!(name(t.find(None, "/x", &method, &mut Params::new())), "any");
        }
        for method in [Method::TRACE, Method::CONNECT, Method::from_bytes(b"PROPFIND").unwrap()] {
            match t.find(None, "/x", &method, &mut Params::new()) {
                Found::MethodNotAllowed(allow) => assert_eq!(allow, STANDARD_METHODS.to_vec()),
                _ => panic!("{method} accepted"),
            }
        }
        let listed = RouteTable::new(vec![(m(&[], PathPattern::prefix("/").unwrap(), &[Method::TRACE]), "trace")]);
        assert_eq!(name(listed.find(None, "/x", &Method::TRACE, &mut Params::new())), "trace");
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
        assert!(PathPattern::prefix("/a;b").is_err());
        assert!(PathPattern::exact("/a//b").is_err());
        assert_eq!(HostPattern::parse("api.example.com.").unwrap(), HostPattern::parse("api.example.com").unwrap());
    }

    /// The README's ordering rules, written out as plainly as possible: every route whose host and
    /// path match is a candidate; the highest (host rank, path rank) wins; among those, one accepting
    /// the method (listing methods first, then file order); none accepting is 405 with their methods.
    fn reference(routes: &[Matcher], host: Option<&str>, path: &str, method: &Method) -> Result<usize, Vec<Method>> {
        let host_rank = |r: &Matcher| -> Option<(u8, usize)> {
            if r.hosts.is_empty() {
                return Some((0, 0));
            }
            let h = host?.trim_end_matches('.').to_ascii_lowercase();
            let h = h.as_str();
            r.hosts
                .iter()
                .filter_map(|p| match p {
                    HostPattern::Exact(e) if e == h => Some((2, 0)),
                    HostPattern::Suffix(s) if h.len() > s.len() && h.ends_with(s.as_str()) => Some((1, s.len())),
                    _ => None,
                })
                .max()
        };
        let path_rank = |p: &PathPattern| match p {
            PathPattern::Exact(x) => (3, x.len(), 0),
            PathPattern::Template(s) => (2, s.iter().filter(|s| matches!(s, Segment::Literal(_))).count(), s.len()),
            PathPattern::Prefix(x) => (1, x.len(), 0),
        };
        let candidates: Vec<(usize, (HostRank, PathRank))> = routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.path.matches(path, r.options, &mut Params::new()))
            .filter_map(|(i, r)| Some((i, (host_rank(r)?, path_rank(&r.path)))))
            .collect();
        let Some(top) = candidates.iter().map(|(_, k)| *k).max() else { return Err(vec![]) };
        let tier: Vec<usize> = candidates.iter().filter(|(_, k)| *k == top).map(|(i, _)| *i).collect();
        let accepting = tier.iter().copied().filter(|&i| {
            let r = &routes[i];
            if r.methods.is_empty() {
                STANDARD_METHODS.contains(method)
            } else {
                r.methods.contains(method)
            }
        });
        if let Some(i) = accepting.min_by_key(|&i| (routes[i].methods.is_empty(), i)) {
            return Ok(i);
        }
        let mut allow: Vec<Method> = tier.iter().flat_map(|&i| routes[i].allowed().to_vec()).collect();
        allow.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        allow.dedup();
        Err(allow)
    }

    fn arb_matcher() -> impl proptest::strategy::Strategy<Value = Matcher> {
        use proptest::prelude::*;
        let host = prop::sample::select(vec!["a.io", "b.a.io", "*.a.io", "c.b.a.io", "*.b.a.io", "z.io"]);
        let seg = prop::sample::select(vec!["a", "b", "C", "{p}"]);
        let path = (0..3u8, prop::collection::vec(seg, 0..3), any::<bool>()).prop_map(|(kind, segs, slash)| {
            let mut text = format!("/{}", segs.join("/"));
            if slash && text.len() > 1 {
                text.push('/');
            }
            let literal = text.replace("{p}", "p");
            match kind {
                0 => PathPattern::exact(&literal).unwrap(),
                1 => PathPattern::prefix(&literal).unwrap(),
                _ => PathPattern::template(&text).unwrap_or_else(|_| PathPattern::exact(&literal).unwrap()),
            }
        });
        let methods = prop::sample::subsequence(vec![Method::GET, Method::POST, Method::DELETE], 0..=2);
        (prop::collection::vec(host, 0..3), path, methods, any::<bool>(), any::<bool>()).prop_map(
            |(hosts, path, methods, case_sensitive, strict_trailing_slash)| Matcher {
                hosts: hosts.iter().map(|h| HostPattern::parse(h).unwrap()).collect(),
                path,
                methods,
                options: PathOptions { case_sensitive, strict_trailing_slash },
            },
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// The table chooses exactly what the brute-force reference chooses, for random tables and requests.
        #[test]
        fn table_agrees_with_the_reference(
            routes in proptest::collection::vec(arb_matcher(), 1..8),
            host in proptest::sample::select(vec![None, Some("a.io"), Some("b.a.io"), Some("B.A.io."), Some("c.b.a.io"), Some("x.c.b.a.io"), Some("z.io"), Some("q.io")]),
            segs in proptest::collection::vec(proptest::sample::select(vec!["a", "b", "c", "C", "p"]), 0..4),
            slash in proptest::prelude::any::<bool>(),
            method in proptest::sample::select(vec![Method::GET, Method::POST, Method::DELETE, Method::PUT, Method::TRACE]),
        ) {
            let mut path = format!("/{}", segs.join("/"));
            if slash && path.len() > 1 {
                path.push('/');
            }
            let table = RouteTable::new(routes.iter().cloned().enumerate().map(|(i, m)| (m, i)).collect());
            let mut params = Params::new();
            let got = match table.find(host, &path, &method, &mut params) {
                Found::Route(&i) => {
                    // The chosen route's own captures, whatever else was tried after it.
                    let mut own = Params::new();
                    routes[i].path.matches(&path, routes[i].options, &mut own);
                    proptest::prop_assert_eq!(params.iter().collect::<Vec<_>>(), own.iter().collect::<Vec<_>>());
                    Ok(i)
                }
                Found::MethodNotAllowed(mut allow) => {
                    allow.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                    Err(allow)
                }
                Found::NotFound => Err(vec![]),
            };
            proptest::prop_assert_eq!(got, reference(&routes, host, &path, &method));
        }
    }
}
