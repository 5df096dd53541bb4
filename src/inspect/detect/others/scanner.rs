//! Scanner and bot fingerprints: attack tools named in a header (`User-Agent: sqlmap/1.7`), and
//! out-of-band probe domains or tool markers in any value (`x.oastify.com`, `bxss.me`). Every rule
//! scores 0: a fingerprint is logged and counted, never a reason to block alone (a User-Agent is
//! trivially forged either way).

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind};

use super::super::{Category, Rule, TargetKind};
use super::Out;

static TOOL: Rule = Rule {
    id: 11001,
    category: Category::Scanner,
    paranoia: 1,
    score: 0,
    name: "attack tool or vulnerability scanner in a header (User-Agent)",
};
static PROBE: Rule = Rule {
    id: 11002,
    category: Category::Scanner,
    paranoia: 1,
    score: 0,
    name: "out-of-band probe domain or scanner marker in a value",
};

/// Tool names as they appear in their default User-Agent strings.
const TOOLS: &[&str] = &[
    "sqlmap",
    "nikto",
    "nuclei",
    "acunetix",
    "nessus",
    "wpscan",
    "masscan",
    "zgrab",
    "dirbuster",
    "gobuster",
    "ffuf",
    "wfuzz",
    "nmap",
    "openvas",
    "w3af",
    "arachni",
    "netsparker",
    "invicti",
    "appscan",
    "qualys",
    "havij",
    "hydra",
    "jaeles",
    "feroxbuster",
    "dirb/",
    "whatweb",
    "skipfish",
    "commix",
    "xsstrike",
    "fimap",
    "paros",
    "webinspect",
    "metasploit",
    "morfeus",
    "zmeu",
    "burpsuite",
    "burp collaborator",
    "owasp zap",
    "zaproxy",
    "bbot",
    "httpx - open-source",
    "interactsh",
    "sqlninja",
    "brutus",
    "grabber",
    "vega/",
    "wapiti",
    "joomscan",
    "droopescan",
    "cmsmap",
    "dotdotpwn",
    "teh forest lobster",
    "internet-measurement",
    "censysinspect",
    "expanseinc",
    "l9explore",
    "fuzz faster u fool",
    "masscan-ng",
    "zmap",
];

/// Out-of-band interaction domains and scanner test markers.
const PROBES: &[&str] = &[
    "burpcollaborator.net",
    "oastify.com",
    "interact.sh",
    "oast.fun",
    "oast.pro",
    "oast.live",
    "oast.site",
    "oast.online",
    "oast.me",
    "dnslog.cn",
    "ceye.io",
    "canarytokens.com",
    "bxss.me",
    "xss.ht",
    "xss.report",
    "pingb.in",
    "requestrepo.com",
    "acunetix-wvs-test",
    "wvstest",
    "sqlmapfile",
    "nessus_",
    "nikto-test",
    "qualys-scan",
    "appscan_fingerprint",
    "netsparker",
    "r87.me",
    "dnslog.link",
    "eyes.sh",
];

static TOOLS_AC: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| build(TOOLS));
static PROBES_AC: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| build(PROBES));

fn build(patterns: &[&str]) -> Option<AhoCorasick> {
    AhoCorasick::builder().ascii_case_insensitive(true).kind(Some(AhoCorasickKind::DFA)).build(patterns).ok()
}

pub(super) const TRIGGERS: &[&str] = &[
    "burpcollaborator",
    "oastify",
    "interact.sh",
    "oast.",
    "dnslog",
    "ceye.io",
    "canarytokens",
    "bxss.me",
    "xss.ht",
    "xss.report",
    "pingb.in",
    "requestrepo",
    "acunetix",
    "wvstest",
    "sqlmap",
    "nessus",
    "nikto",
    "qualys",
    "appscan",
    "netsparker",
    "r87.me",
    "eyes.sh",
];

pub(super) fn scan(out: &mut Out<'_, '_>) {
    let v = out.v;
    let text = v.decoded;
    if v.kind == TargetKind::Header {
        out.work(text.len());
        if TOOLS_AC.as_ref().is_some_and(|ac| ac.is_match(text)) {
            out.hit(&TOOL);
        }
    }
    out.work(text.len());
    if PROBES_AC.as_ref().is_some_and(|ac| ac.is_match(text)) {
        out.hit(&PROBE);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{blocks, ids_at};
    use crate::inspect::detect::TargetKind;

    #[test]
    fn automata_build() {
        assert!(super::TOOLS_AC.is_some() && super::PROBES_AC.is_some());
    }

    #[test]
    fn tools_are_fingerprinted_but_never_block() {
        for ua in [
            "sqlmap/1.7.2#stable (https://sqlmap.org)",
            "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000003)",
            "Mozilla/5.0 (compatible; Nuclei - Open-source project (github.com/projectdiscovery/nuclei))",
            "Mozilla/5.0 (compatible; acunetix)",
            "Mozilla/5.0 (compatible; Nessus SOAP)",
            "WPScan v3.8.22 (https://wpscan.com/wordpress-security-scanner)",
            "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
            "Mozilla/5.0 zgrab/0.x",
            "DirBuster-1.0-RC1 (http://www.owasp.org/index.php/Category:OWASP_DirBuster_Project)",
            "gobuster/3.6",
            "Fuzz Faster U Fool v2.1.0",
            "Wfuzz/3.1.0",
            "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
            "w3af.org",
            "Mozilla/5.0 (Windows NT 10.0) OpenVAS-VT",
        ] {
            assert!(
                ids_at(ua, TargetKind::Header, 1).contains(&11001),
                "{ua}: {:?}",
                ids_at(ua, TargetKind::Header, 1)
            );
            assert!(!blocks(ua, TargetKind::Header), "{ua}: {:?}", ids_at(ua, TargetKind::Header, 1));
        }
        assert!(ids_at("http://x.oastify.com/a", TargetKind::QueryValue, 1).contains(&11002));
    }

    #[test]
    fn browsers_are_not_fingerprinted() {
        for ua in [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
            "curl/8.5.0",
            "python-requests/2.31.0",
            "PostmanRuntime/7.36.0",
        ] {
            assert!(ids_at(ua, TargetKind::Header, 4).is_empty(), "{ua}");
        }
    }
}
