//! NoSQL (MongoDB) operator injection: query operators where a value is expected, as JSON keys
//! (`{"password": {"$ne": null}}`), in bracketed query or form names (`password[$ne]=`), or written as
//! an object inside a string value (`{$gt: ''}`); and server-side JavaScript injection (`$where`,
//! `'; return true; var x='`, `' || '1'=='1`, `this.password.match(`).
//!
//! Legitimate `$` keys (JSON Schema `$schema`, `$ref`, `$id`, `$comment`, `$defs`; OData `$filter`,
//! `$top`, `$count`) are not operators and pass.

use std::sync::LazyLock;

use super::super::{Category, Rule, TargetKind};
use super::text::RuleSet;
use super::Out;

static OPERATOR_KEY: Rule = Rule {
    id: 7001,
    category: Category::Nosql,
    paranoia: 1,
    score: 5,
    name: "NoSQL query operator as a key or bracketed name ($ne, $gt, $regex, $where)",
};
static OPERATOR_IN_VALUE: Rule = Rule {
    id: 7002,
    category: Category::Nosql,
    paranoia: 1,
    score: 5,
    name: "NoSQL query operator object inside a value ({\"$ne\": 1}, [$gt]=)",
};
static JAVASCRIPT: Rule = Rule {
    id: 7003,
    category: Category::Nosql,
    paranoia: 1,
    score: 5,
    name: "server-side JavaScript injection (quote break then return, this., sleep(, ||'a'=='a)",
};
static OPERATOR_LOOSE: Rule = Rule {
    id: 7101,
    category: Category::Nosql,
    paranoia: 2,
    score: 3,
    name: "rare NoSQL operator in a value, or database shell call",
};

pub(super) const TRIGGERS: &[&str] = &["$", "this.", "return", "sleep(", "db.", "'", "\"", ";", "||", "&&"];

/// Operators that select or compute, which a client never sends where a value is expected.
const OPERATORS: &[&str] = &[
    "ne",
    "eq",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "nin",
    "regex",
    "where",
    "exists",
    "expr",
    "function",
    "accumulator",
    "elemmatch",
    "nor",
    "not",
    "or",
    "and",
    "all",
    "size",
    "mod",
    "text",
    "type",
    "jsonschema",
    "lookup",
    "match",
    "options",
    "slice",
    "bitsallset",
    "bitsanyset",
    "geowithin",
    "near",
];

static VALUE_RULES: LazyLock<RuleSet> = LazyLock::new(|| {
    let ops = "ne|eq|gt|gte|lt|lte|in|nin|regex|where|exists|expr|function|accumulator|elemmatch|nor|not|or|and|all|size|mod|jsonschema|lookup|match";
    let object = format!(r#"(?i)(?:^|[{{,\[\s'"])\$(?:{ops})['"]?\s*:"#);
    let bracket = format!(r"(?i)\[\s*\$(?:{ops})\s*\]");
    RuleSet::new(&[
        (&object, &OPERATOR_IN_VALUE),
        (&bracket, &OPERATOR_IN_VALUE),
        (
            r#"(?i)['"]\s*\)?\s*(?:;|\|\||&&)\s*(?:return\b|this\.|sleep\s*\(|while\s*\(|db\.|var\s|function\s*\(|[a-z_]\w*\s*=\s*new\s+date)"#,
            &JAVASCRIPT,
        ),
        (r#"(?i)['"]\s*(?:\|\||&&)\s*['"][^'"]{0,20}['"]\s*===?\s*['"]"#, &JAVASCRIPT),
        (r"(?i)\bthis\.\w+\.match\s*\(|(?:\|\||&&)\s*this\.\w+\s*[=!]=|(?:\|\||&&)\s*\d+\s*===?\s*\d+", &JAVASCRIPT),
        (r#"['"]\s*[}\]][\s}\]]*,\s*\$\w+['"]?\s*:"#, &OPERATOR_IN_VALUE),
        (r"(?i)^\s*\d*\s*;\s*(?:return\s+(?:true|1|\()|sleep\s*\(|var\s)|\breturn\s+sleep\s*\(", &JAVASCRIPT),
        (
            r"(?i)\bdb\.\w+\.(?:insert|drop|remove|mapreduce|update|deletemany)\s*\(|\$(?:comment|type|text|options)['\x22]?\s*:",
            &OPERATOR_LOOSE,
        ),
    ])
});

pub(super) fn scan(out: &mut Out<'_, '_>) {
    match out.v.kind {
        TargetKind::JsonKey | TargetKind::QueryName | TargetKind::FormName => key(out),
        _ => {}
    }
    // Every value rule needs one of these bytes (an operator's `$`, a `||`/`&&`, a `;` or a call's
    // `(`; the quote-led ones also need one of the first three): without one, the regex set cannot match.
    if out.v.decoded.bytes().any(|b| matches!(b, b'$' | b'|' | b'&' | b';' | b'(')) {
        VALUE_RULES.scan(out);
    }
}

/// A key or name: `$op` itself, or `[$op]` inside it (`user[$ne]`, `filter[name][$regex]`).
fn key(out: &mut Out<'_, '_>) {
    let v = out.v;
    let b = v.decoded.as_bytes();
    out.work(b.len());
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'$', b.get(i..).unwrap_or_default()) {
        let at = i + p;
        let name_len = b.get(at + 1..).unwrap_or_default().iter().take_while(|c| c.is_ascii_alphanumeric()).count();
        let name = b.get(at + 1..at + 1 + name_len).unwrap_or_default();
        let whole = at == 0 && name_len + 1 == b.trim_ascii_end().len() && v.kind == TargetKind::JsonKey;
        let bracketed = at > 0 && b.get(at - 1) == Some(&b'[') && b.get(at + 1 + name_len) == Some(&b']');
        let dotted = at > 0 && b.get(at - 1) == Some(&b'.');
        if (whole || bracketed || dotted) && OPERATORS.iter().any(|o| o.as_bytes().eq_ignore_ascii_case(name)) {
            out.hit(&OPERATOR_KEY);
            return;
        }
        i = at + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{blocks, ids, ids_at};
    use crate::inspect::detect::TargetKind;

    #[test]
    fn patterns_compile() {
        assert!(super::VALUE_RULES.compiled());
    }

    #[test]
    fn operator_keys_are_detected_at_level_1() {
        for k in [
            "$ne",
            "$gt",
            "$gte",
            "$lt",
            "$regex",
            "$where",
            "$exists",
            "$nin",
            "$in",
            "$or",
            "$expr",
            "$elemMatch",
            "$type",
            "$jsonSchema",
            "$function",
        ] {
            assert!(blocks(k, TargetKind::JsonKey), "{k}");
        }
        for n in ["user[$ne]", "password[$gt]", "q[$regex]", "filter[name][$where]", "login[$nin][]", "a.$gt"] {
            assert!(blocks(n, TargetKind::QueryName), "{n}");
            assert!(blocks(n, TargetKind::FormName), "{n}");
        }
    }

    #[test]
    fn operators_and_javascript_in_values_are_detected_at_level_1() {
        for p in [
            "{\"$ne\": null}",
            "{\"$gt\": \"\"}",
            "{$gt: ''}",
            "{ $ne: 1 }",
            "{\"$regex\": \"^.*$\", \"$options\": \"si\"}",
            "[{\"$match\": {\"role\": {\"$ne\": \"user\"}}}]",
            "[$ne]=1",
            "', $where: '1 == 1'",
            "$where: '1 == 1'",
            "', $or: [ {}, { 'a':'a",
            "' && this.password.match(/.*/)//",
            "' || '1'=='1",
            "admin' || 'a'=='a",
            "\" || \"\"==\"",
            "'; return true; var x='",
            "'; sleep(5000); var x='",
            "'; while(true){}; var x='",
            "\"; return db.getCollectionNames(); var x=\"",
            "1; return true",
            "0;return true",
            "1 || this.isAdmin == true",
            "this.password.match(/^a/)",
            "function(){ return sleep(5000) }",
            "';it=new Date();do{pt=new Date();}while(pt-it<5000);",
            "' } ], $comment:'successful MongoDB injection'",
            "|| 1==1",
        ] {
            assert!(blocks(p, TargetKind::JsonString), "{p:?}: {:?}", ids_at(p, TargetKind::JsonString, 4));
        }
    }

    #[test]
    fn legitimate_dollar_keys_and_values_pass() {
        for k in [
            "$schema",
            "$ref",
            "$id",
            "$comment",
            "$defs",
            "$anchor",
            "$dynamicRef",
            "$filter",
            "$top",
            "$count",
            "$metadata",
            "price$usd",
            "_id",
        ] {
            assert!(!blocks(k, TargetKind::JsonKey), "{k}");
            assert!(!blocks(k, TargetKind::QueryName), "{k}");
        }
        for p in [
            "Price: <$50 for members, >$80 otherwise.",
            "SELECT id FROM users WHERE email = $1",
            "$ cargo build --release",
            "{\"$ref\": \"#/definitions/user\"}",
            "O'Brien; O'Neil",
            "function isValid() { return true; }",
            "He said \"yes\"; she said \"no\"",
            "The $in operator matches any value in an array",
        ] {
            assert!(!blocks(p, TargetKind::JsonString), "{p:?}: {:?}", ids(p));
        }
    }

    #[test]
    fn looser_levels_catch_more() {
        assert!(ids_at("db.users.drop()", TargetKind::JsonString, 2).contains(&7101));
    }
}
