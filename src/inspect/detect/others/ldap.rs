//! LDAP filter injection: closing the application's filter and opening new clauses
//! (`*)(uid=*))(|(uid=*`, `admin)(&)`, `)(cn=*`, `*)(&`), composite filters with attribute tests
//! (`(|(cn=*)`), wildcard closes (`*))`) and the special-character probe `*()|&'`.

use std::sync::LazyLock;

use super::super::{Category, Rule};
use super::text::RuleSet;
use super::Out;

static CLAUSE: Rule = Rule {
    id: 8501,
    category: Category::Ldap,
    paranoia: 1,
    score: 5,
    name: "LDAP filter closed and a clause opened ()(uid=, )(|, *)(&)",
};
static COMPOSITE: Rule = Rule {
    id: 8502,
    category: Category::Ldap,
    paranoia: 1,
    score: 5,
    name: "LDAP composite filter with attribute tests ((|(cn=*), (&), (|))",
};
static WILDCARD_CLOSE: Rule = Rule {
    id: 8503,
    category: Category::Ldap,
    paranoia: 1,
    score: 5,
    name: "LDAP wildcard closing filters (*)), or the *()|& probe",
};
static PRESENCE: Rule = Rule {
    id: 8601,
    category: Category::Ldap,
    paranoia: 2,
    score: 3,
    name: "LDAP presence test ((cn=*)) or wildcard close at the end",
};

pub(super) const TRIGGERS: &[&str] = &[")(", ") (", "(|", "(&", "(!", "*)", "=*", "*()"];

static RULES: LazyLock<RuleSet> = LazyLock::new(|| {
    RuleSet::new(&[
        (r"(?i)\)\s*\(+\s*(?:[|&!]|[a-z][\w.;-]*\s*[~<>]?=)", &CLAUSE),
        (r"(?i)\(\s*[|&!]\s*\(\s*[a-z][\w.;-]*\s*[~<>]?=|\(\s*[|&]\s*\)", &COMPOSITE),
        (r"\*\s*\)\s*\)|\*\(\)\|&", &WILDCARD_CLOSE),
        (r"(?i)\(\s*[a-z][\w.;-]*\s*=\s*\*\s*\)|\*\s*\)\s*$", &PRESENCE),
    ])
});

pub(super) fn scan(out: &mut Out<'_, '_>) {
    RULES.scan(out);
}

#[cfg(test)]
mod tests {
    use super::super::testing::{blocks, ids, ids_at};
    use crate::inspect::detect::TargetKind;

    #[test]
    fn patterns_compile() {
        assert!(super::RULES.compiled());
    }

    #[test]
    fn injections_are_detected_at_level_1() {
        for p in [
            "*)(uid=*))(|(uid=*",
            "*)(&",
            "*)(|(cn=*))",
            ")(cn=*",
            ")(|(cn=*)(",
            "admin)(&)",
            "admin)(|(uid=*))",
            "admin*)((|userPassword=*)",
            "*)(memberOf>=0",
            "*))%00",
            "x*))\0",
            "*(|(objectclass=*))",
            "x)(!(cn=x))",
            "jdoe)(|(objectClass=*)(memberOf=*))",
            "*()|&'",
            ")(cn=))",
        ] {
            assert!(blocks(p, TargetKind::QueryValue), "{p:?}: {:?}", ids_at(p, TargetKind::QueryValue, 4));
        }
    }

    #[test]
    fn benign_look_alikes_pass_at_level_1() {
        for p in [
            "(a)(b)",
            "Call me (maybe) (555) 123-4567",
            "f(x)(y)",
            "Use the wildcard (*) to match",
            "Results (see note)(2)",
            "x = (a * b)",
        ] {
            assert!(!blocks(p, TargetKind::JsonString), "{p:?}: {:?}", ids(p));
        }
    }

    #[test]
    fn looser_levels_catch_more() {
        assert!(ids_at("(cn=*)", TargetKind::QueryValue, 2).contains(&8601));
    }
}
