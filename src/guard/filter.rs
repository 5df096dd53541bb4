//! IP allow and deny lists (`ip_filter:`, globally and per route), from the config and from list files.
//!
//! Deny wins: an address on a deny list is refused even if an allow list names it. When an allow list
//! is present (`allow:` or `allow_files:`), only the addresses on it get in; an allow list file that is
//! empty lets nobody in (an unreadable or emptied restriction never turns into "anyone"). A refused
//! client gets 403 `ip-denied` before authentication runs.
//!
//! List files hold one CIDR or address per line; `#` starts a comment. They are read at load and on
//! every reload, and re-read when they change (checked every second by size, modification time and
//! inode). A list file that cannot be read or holds a bad line keeps the lists in force, and is logged
//! and counted.

use super::prefix::{parse_entry, IpSet};
use crate::exchange::Reject;
use arc_swap::ArcSwap;
use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// `ip_filter:` (global) and `routes[].ip_filter`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IpFilterConfig {
    /// Only these get in (with `allow_files`). Absent: everyone not denied.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub allow_files: Vec<PathBuf>,
    #[serde(default)]
    pub deny_files: Vec<PathBuf>,
}

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp { len: m.len(), modified: m.modified().ok(), inode: m.ino() })
}

/// The lists in force.
struct Lists {
    allow: Option<IpSet<()>>,
    deny: IpSet<()>,
}

/// One compiled `ip_filter`.
pub struct IpFilter {
    /// Where it was configured (`ip_filter`, `route api`), for logs.
    name: String,
    allow: Option<Vec<IpNet>>,
    deny: Vec<IpNet>,
    allow_files: Vec<PathBuf>,
    deny_files: Vec<PathBuf>,
    lists: ArcSwap<Lists>,
    /// The files' stamps when last read (whatever the outcome).
    seen: Mutex<Vec<Option<Stamp>>>,
}

impl std::fmt::Debug for IpFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpFilter").field("name", &self.name).finish_non_exhaustive()
    }
}

fn entries(at: &str, list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter().map(|e| parse_entry(e).ok_or_else(|| format!("{at}: `{e}` is not a CIDR or an IP address"))).collect()
}

/// Reads a list file: one CIDR or address per line, `#` comments, blank lines ignored.
pub fn read_list(path: &Path) -> Result<Vec<IpNet>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("list file {}: cannot be read: {}", path.display(), e.kind()))?;
    let mut out = Vec::with_capacity(text.len() / 16);
    for (i, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let net = parse_entry(entry).ok_or_else(|| {
            let shown: String = entry.chars().take(64).collect();
            format!("list file {}:{}: `{shown}` is not a CIDR or an IP address", path.display(), i + 1)
        })?;
        out.push(net);
    }
    Ok(out)
}

impl IpFilter {
    /// Compiles a filter and reads its files (an error names the file and line). `name` says where it
    /// was configured.
    pub fn compile(name: &str, c: &IpFilterConfig) -> Result<IpFilter, String> {
        if c.allow.as_ref().is_some_and(Vec::is_empty) && c.allow_files.is_empty() {
            return Err(format!(
                "{name}: `allow: []` lets nobody in; list the addresses that may enter, or remove `allow`"
            ));
        }
        let allow = c.allow.as_ref().map(|a| entries(&format!("{name}.allow"), a)).transpose()?;
        let allow = match (allow, c.allow_files.is_empty()) {
            (None, false) => Some(Vec::new()),
            (a, _) => a,
        };
        let filter = IpFilter {
            name: name.to_owned(),
            allow,
            deny: entries(&format!("{name}.deny"), &c.deny)?,
            allow_files: c.allow_files.clone(),
            deny_files: c.deny_files.clone(),
            lists: ArcSwap::from_pointee(Lists { allow: None, deny: IpSet::default() }),
            seen: Mutex::new(Vec::new()),
        };
        let stamps = filter.stamps();
        let lists = filter.read()?;
        filter.lists.store(std::sync::Arc::new(lists));
        *filter.seen.lock().unwrap_or_else(|e| e.into_inner()) = stamps;
        Ok(filter)
    }

    fn stamps(&self) -> Vec<Option<Stamp>> {
        self.allow_files.iter().chain(&self.deny_files).map(|p| stamp(p)).collect()
    }

    /// Builds the lists from the config's entries and the files' current contents.
    fn read(&self) -> Result<Lists, String> {
        let mut allow = self.allow.clone();
        for path in &self.allow_files {
            allow.get_or_insert_with(Vec::new).extend(read_list(path)?);
        }
        let mut deny = self.deny.clone();
        for path in &self.deny_files {
            deny.extend(read_list(path)?);
        }
        let build = |nets: Vec<IpNet>| IpSet::build(nets.into_iter().map(|n| (n, ())), |_, _| ());
        Ok(Lists { allow: allow.map(build), deny: build(deny) })
    }

    /// True when the filter has list files to watch.
    pub fn has_files(&self) -> bool {
        !self.allow_files.is_empty() || !self.deny_files.is_empty()
    }

    /// Re-reads the files if any changed since last read. `Ok(true)`: new lists in force; an error
    /// keeps the old ones (and is not retried until a file changes again).
    pub fn refresh(&self) -> Result<bool, String> {
        let now = self.stamps();
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return Ok(false);
            }
            *seen = now;
        }
        let lists = self.read()?;
        self.lists.store(std::sync::Arc::new(lists));
        Ok(true)
    }

    /// Deny wins; with an allow list, only it gets in.
    #[inline]
    pub fn check(&self, ip: IpAddr) -> Result<(), Reject> {
        let lists = self.lists.load();
        if lists.deny.contains(ip) || lists.allow.as_ref().is_some_and(|a| !a.contains(ip)) {
            return Err(Reject::IpDenied);
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// What `check` prints: `allow N, deny M` ranges in force.
    pub fn describe(&self) -> String {
        let lists = self.lists.load();
        match &lists.allow {
            Some(a) => format!("ip_filter: allow {} ranges, deny {} ranges", a.len(), lists.deny.len()),
            None => format!("ip_filter: deny {} ranges", lists.deny.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn cfg(allow: Option<&[&str]>, deny: &[&str]) -> IpFilterConfig {
        IpFilterConfig {
            allow: allow.map(|a| a.iter().map(|s| (*s).to_owned()).collect()),
            deny: deny.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn deny_wins_and_an_allow_list_is_exclusive() {
        let f = IpFilter::compile("t", &cfg(Some(&["10.0.0.0/8", "2001:db8::/32"]), &["10.0.0.66"])).unwrap();
        assert_eq!(f.check(ip("10.1.1.1")), Ok(()));
        assert_eq!(f.check(ip("10.0.0.66")), Err(Reject::IpDenied));
        assert_eq!(f.check(ip("192.0.2.1")), Err(Reject::IpDenied));
        assert_eq!(f.check(ip("2001:db8::5")), Ok(()));
        assert_eq!(f.check(ip("::ffff:10.9.9.9")), Ok(()));
        let open = IpFilter::compile("t", &cfg(None, &["192.0.2.0/24"])).unwrap();
        assert_eq!(open.check(ip("198.51.100.1")), Ok(()));
        assert_eq!(open.check(ip("::ffff:192.0.2.200")), Err(Reject::IpDenied));
    }

    #[test]
    fn bad_entries_and_an_empty_allow_list_are_errors() {
        let e = IpFilter::compile("ip_filter", &cfg(None, &["10.0.0.0/8", "nope"])).unwrap_err();
        assert!(e.contains("ip_filter.deny") && e.contains("`nope`"), "{e}");
        let e = IpFilter::compile("ip_filter", &cfg(Some(&[]), &[])).unwrap_err();
        assert!(e.contains("lets nobody in"), "{e}");
    }

    #[test]
    fn list_files_are_read_and_re_read_when_they_change() {
        let dir = std::env::temp_dir().join(format!("portcullis-filter-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let list = dir.join("deny.txt");
        std::fs::write(&list, "# blocked\n192.0.2.0/24  # a whole net\n\n2001:db8::1\n").unwrap();
        let c = IpFilterConfig { deny_files: vec![list.clone()], ..Default::default() };
        let f = IpFilter::compile("t", &c).unwrap();
        assert_eq!(f.check(ip("192.0.2.9")), Err(Reject::IpDenied));
        assert_eq!(f.check(ip("2001:db8::1")), Err(Reject::IpDenied));
        assert_eq!(f.check(ip("198.51.100.1")), Ok(()));
        assert_eq!(f.refresh(), Ok(false), "unchanged");
        // A bad line: the old lists stay.
        std::fs::write(&list, "198.51.100.0/24\nnot-an-address\n").unwrap();
        let e = f.refresh().unwrap_err();
        assert!(e.contains("deny.txt:2"), "{e}");
        assert_eq!(f.check(ip("192.0.2.9")), Err(Reject::IpDenied));
        assert_eq!(f.check(ip("198.51.100.1")), Ok(()));
        std::fs::write(&list, "198.51.100.0/24\n").unwrap();
        assert_eq!(f.refresh(), Ok(true));
        assert_eq!(f.check(ip("192.0.2.9")), Ok(()));
        assert_eq!(f.check(ip("198.51.100.1")), Err(Reject::IpDenied));
        // An empty allow file lets nobody in.
        let allow = dir.join("allow.txt");
        std::fs::write(&allow, "# nobody yet\n").unwrap();
        let c = IpFilterConfig { allow_files: vec![allow], ..Default::default() };
        let f = IpFilter::compile("t", &c).unwrap();
        assert_eq!(f.check(ip("10.0.0.1")), Err(Reject::IpDenied));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
