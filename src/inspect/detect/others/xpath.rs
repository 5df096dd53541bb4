//! XPath injection: a quote break followed by XPath boolean logic or functions
//! (`' or count(/*)=1 or '`, `') and contains(../password,'c`), union of node sets
//! (`'] | //* | //*['`), XPath functions on absolute paths (`count(/child::node())`), axes
//! (`descendant::`, `child::node()`), and the quote-break tautology (`' or '1'='1`) that XPath shares
//! with SQL.

use std::sync::LazyLock;

use super::super::{Category, Rule};
use super::text::RuleSet;
use super::Out;

static BOOLEAN: Rule = Rule {
    id: 8001,
    category: Category::Xpath,
    paranoia: 1,
    score: 5,
    name: "quote break followed by XPath boolean logic on functions or paths",
};
static UNION: Rule = Rule {
    id: 8002,
    category: Category::Xpath,
    paranoia: 1,
    score: 5,
    name: "XPath node-set union after a predicate break (']|//*)",
};
static FUNCTION: Rule = Rule {
    id: 8003,
    category: Category::Xpath,
    paranoia: 1,
    score: 5,
    name: "XPath function on an absolute path or axis (count(/*), name(/*[1]), child::node())",
};
static TAUTOLOGY: Rule =
    Rule { id: 8004, category: Category::Xpath, paranoia: 1, score: 5, name: "quote-break tautology (' or '1'='1)" };

pub(super) const TRIGGERS: &[&str] = &["'", "\"", "::", "|", "(/", "( /", "name(", "(.", "="];

static RULES: LazyLock<RuleSet> = LazyLock::new(|| {
    RuleSet::new(&[
        (
            r#"(?i)['"]\s*\)?\s*(?:or|and)\b\s*(?:not|true|false|count|name|local-name|string-length|substring|contains|starts-with|boolean|position|last|normalize-space|translate|doc|doc-available|text|string|number|sum|concat)\s*\("#,
            &BOOLEAN,
        ),
        (r#"(?i)['"]\s*\)?\s*(?:or|and)\b\s*(?://|/\*|\.\./|/[a-z_])"#, &BOOLEAN),
        (r#"(?i)\]\s*\|\s*/|['"]\s*\|\s*//?[a-z*@]|\|\s*//\*\s*\["#, &UNION),
        (
            r"(?i)\b(?:count|name|local-name|string-length|string|substring|normalize-space|boolean|number|sum)\s*\(\s*(?:/|\.\./|\.\s*\)|name\s*\(|child::|descendant)",
            &FUNCTION,
        ),
        (
            r"(?i)\b(?:child|descendant|descendant-or-self|ancestor|ancestor-or-self|following|following-sibling|preceding|preceding-sibling|attribute|namespace)::(?:node\(\)|text\(\)|\*|[a-z_])|\b(?:self|parent)::(?:node\(\)|\*)",
            &FUNCTION,
        ),
        (
            r#"(?i)['"]\s*\)?\s*(?:or|and)\b\s*\(?\s*['"]?\w*['"]?\s*!?=\s*['"]|\bor\s+['"]\w*['"]\s*=\s*['"]"#,
            &TAUTOLOGY,
        ),
        (r"(?i)^\s*\w*\s+or\s+(\d+)\s*=\s*\d+\s*$", &TAUTOLOGY),
    ])
});

pub(super) fn scan(out: &mut Out<'_, '_>) {
    if may_match(out.v.decoded.as_bytes()) {
        RULES.scan(out);
    }
}

/// A necessary condition of the rules above, checked in one pass: a `|`, `(` or `::`; or a quote with
/// a `/` or `=`; or `=` with ` or ` (the unquoted `x or 1=1`).
fn may_match(b: &[u8]) -> bool {
    let (mut quote, mut slash, mut eq) = (false, false, false);
    for &c in b {
        match c {
            b'|' | b'(' | b':' => return true,
            b'\'' | b'"' => quote = true,
            b'/' => slash = true,
            b'=' => eq = true,
            _ => {}
        }
    }
    (quote && (slash || eq)) || (eq && b.windows(2).any(|w| w.eq_ignore_ascii_case(b"or")))
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
            "' or '1'='1",
            "\" or \"1\"=\"1",
            "' or ''='",
            "'  OR  ''='",
            "') or ('1'='1",
            "x' or 1=1 or 'x'='y",
            "' or count(/*)=1 or '",
            "' and count(/@*)=1 and '1'='1",
            "' or true() or '",
            "'or text()='",
            "' or contains(name(),'user') or '",
            "' or //user[name/text()='admin'] or '",
            "') and starts-with(../password,'c",
            "' and substring(//user[1]/password,1,1)='a' and '1'='1",
            "'] | //* | //*['",
            "1] | //*[1",
            "' | //password | '",
            "')] | //user/*[contains(*,'",
            "count(/child::node())",
            "name(/*[1])",
            "string-length(name(.))",
            "/descendant::user",
            "1 or 1=1",
        ] {
            assert!(blocks(p, TargetKind::XmlText), "{p:?}: {:?}", ids_at(p, TargetKind::XmlText, 4));
        }
    }

    #[test]
    fn benign_look_alikes_pass_at_level_1() {
        for p in [
            "O'Brien",
            "D'Arcy Dell'Acqua or Sant'Anna",
            "Don't or won't",
            "rock 'n' roll",
            "a | b | c",
            "std::vector<int> v;",
            "self::$instance",
            "parent::__construct()",
            "count(items)",
            "He said 'yes' and left",
            "Use 'a' or 'b' as the flag",
        ] {
            assert!(!blocks(p, TargetKind::JsonString), "{p:?}: {:?}", ids(p));
        }
    }
}
