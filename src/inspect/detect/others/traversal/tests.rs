use super::super::testing::{blocks, ids, ids_at};
use crate::inspect::detect::TargetKind;

#[test]
fn patterns_compile() {
    assert!(super::PATTERNS.compiled());
    assert!(super::NAMES.is_some());
}

#[test]
fn traversals_are_detected_at_level_1() {
    for p in [
        "../../../../etc/passwd",
        "..\\..\\..\\windows\\win.ini",
        "....//....//....//etc/passwd",
        "..././..././etc/passwd",
        "../config.php",
        "/static/../../../etc/shadow",
        "..;/..;/WEB-INF/web.xml",
        "/etc/passwd",
        "/etc/passwd\0.png",
        "/proc/self/environ",
        "C:\\boot.ini",
        "c:/windows/win.ini",
        "WEB-INF/web.xml",
        "php://filter/convert.base64-encode/resource=index.php",
        "php://input",
        "file:///etc/passwd",
        "file:/etc/passwd",
        "zip://uploads/a.zip#shell.php",
        "phar://uploads/a.jpg/x",
        "expect://id",
        "data://text/plain;base64,PD9waHAgcGhwaW5mbygpOyA/Pg==",
        "..%2f..%2fetc%2fpasswd",
        "..%c0%af..%c0%afetc/passwd",
        "/var/log/apache2/access.log",
        "/.git/config",
        "~/.ssh/id_rsa",
        "/.env",
        "/etc/rpc",
        "//etc/utmp",
        "/.\\/\\.\\etc/shadow",
        "/\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}proc/self/cmdline",
        "/\u{fffd}\u{fffd}\u{fffd}\u{fffd}\\\u{fffd}\u{fffd}\u{fffd}\u{fffd}\\etc/shadow",
        "/%c0%2e%c0%2e/%c0%2e%c0%2e/etc/hosts",
        "/..%u2215..%u2215boot.ini",
        "/0x2e0x2e/0x2e0x2e/x",
        "/\u{fffd}.\u{fffd}./\u{fffd}.\u{fffd}./etc/hosts",
        "%uff0e%uff0e/%uff0e%uff0e/x",
    ] {
        assert!(blocks(p, TargetKind::QueryValue), "{p:?}: {:?}", ids_at(p, TargetKind::QueryValue, 4));
    }
    assert!(blocks("../secret.txt", TargetKind::FileName));
    assert!(blocks("a/../../b", TargetKind::FileName));
}

#[test]
fn benign_look_alikes_pass_at_level_1() {
    for p in [
        "See the [docs](../docs/setup.md) for more.",
        "Wait... what?",
        "and so on..",
        "process.env.NODE_ENV",
        "The file /etc/hosts maps names to addresses",
        "Edit your hosts file",
        "version 1.2..1.4",
        "https://example.com/a/b",
        "C:\\Users\\me\\Documents\\report.docx",
        "win.initial",
        "profile_id_rsa_key_name",
        "see /etc/ for configuration",
        "/api/etc/passwords-policy",
    ] {
        assert!(!blocks(p, TargetKind::JsonString), "{p:?}: {:?}", ids(p));
    }
}

#[test]
fn looser_levels_catch_more() {
    assert!(ids_at("See [docs](../docs/setup.md)", TargetKind::JsonString, 2).contains(&4101));
    assert!(ids_at("the file /etc/hosts", TargetKind::JsonString, 2).contains(&4102));
    assert!(ids_at("path=/usr/local", TargetKind::JsonString, 3).contains(&4201));
}
