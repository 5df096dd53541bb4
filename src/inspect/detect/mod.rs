//! The detectors. Each is a module with one entry point,
//! `pub fn scan(v: &View<'_>, hits: &mut Hits)`, that reads one normalised value and reports
//! the rules it matched. Detectors match with `regex`, `aho-corasick`, `memchr` or hand-written
//! scanners only (linear time: no input can make them backtrack), and count their work in
//! [`Hits::work`] (bytes looked at), so a test can assert the work stays linear in the input without
//! reading a clock.
//!
//! A rule has a stable numeric id (by category: 1xxx SQL injection, 2xxx XSS, 3xxx command injection,
//! 4xxx path traversal / file inclusion, 5xxx remote file inclusion and SSRF, 6xxx template and
//! expression injection, 7xxx NoSQL, 8xxx XPath and LDAP, 9xxx deserialization, 10xxx XXE and
//! protocol, 11xxx scanners and bots), a category, a paranoia level (1 to 4; a rule runs when the
//! route's level is at least its own) and a score added to the request's anomaly score.

/// What kind of attack a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Sqli,
    Xss,
    Cmdi,
    Traversal,
    Ssrf,
    Template,
    Nosql,
    Xpath,
    Ldap,
    Deserialization,
    Xxe,
    Scanner,
}

impl Category {
    /// The name used in config (`exclusions`), logs and the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Sqli => "sqli",
            Category::Xss => "xss",
            Category::Cmdi => "cmdi",
            Category::Traversal => "traversal",
            Category::Ssrf => "ssrf",
            Category::Template => "template",
            Category::Nosql => "nosql",
            Category::Xpath => "xpath",
            Category::Ldap => "ldap",
            Category::Deserialization => "deserialization",
            Category::Xxe => "xxe",
            Category::Scanner => "scanner",
        }
    }
}

/// One rule: declared once as a `static`, reported by reference.
#[derive(Debug)]
pub struct Rule {
    pub id: u32,
    pub category: Category,
    /// 1 to 4: the rule runs when the route's paranoia level is at least this.
    pub paranoia: u8,
    /// Added to the request's anomaly score when the rule matches (5 is "critical": one such match
    /// reaches the default threshold alone; scanner rules score 0, they are logged, never blocking).
    pub score: u8,
    /// A short description for the logs.
    pub name: &'static str,
}

/// Where a value came from, which some detectors weigh (a NoSQL operator is only suspicious as a JSON
/// key; a URL only in a parameter value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    PathSegment,
    QueryName,
    QueryValue,
    Cookie,
    Header,
    JsonKey,
    JsonString,
    FormName,
    FormValue,
    MultipartValue,
    FileName,
    XmlText,
    XmlAttribute,
}

/// One value as the detectors see it.
pub struct View<'a> {
    /// The value as it arrived (after the transport's own decoding: a query value percent-decoded once).
    pub raw: &'a str,
    /// Decoded until stable: percent-decoding (bounded passes), `%uXXXX`, `\uXXXX`, HTML entities.
    pub decoded: &'a str,
    /// `decoded`, case-folded to lower case, runs of whitespace as one space, SQL comments as one space.
    pub folded: &'a str,
    pub kind: TargetKind,
    /// The route's paranoia level (1 to 4).
    pub paranoia: u8,
}

/// The rules a request matched so far, and the work spent finding them.
#[derive(Default)]
pub struct Hits {
    pub matched: Vec<(&'static Rule, TargetKind)>,
    /// Bytes looked at by normalisation and detectors (for the linear-work test).
    pub work: u64,
}

impl Hits {
    /// Records that `rule` matched (if the route's level runs it).
    pub fn hit(&mut self, rule: &'static Rule, v: &View<'_>) {
        if rule.paranoia <= v.paranoia {
            self.matched.push((rule, v.kind));
        }
    }
}

pub mod others;
pub mod protocol;
pub mod sqli;
pub mod xss;
