#!/usr/bin/env python3
"""Generates tests/corpus/benign.jsonl: legitimate API values that look dangerous.

    python3 tests/corpus/gen_benign.py

Deterministic (fixed seed). Every word list and template is written here; the hand-written tricky values are at
the end. Each line is {"category": "benign", "place": ..., "payload": ...}; the replay encodes the payload for
its place exactly as it does for attacks.
"""

import base64
import json
import os
import random

SEED = 20261129
HERE = os.path.dirname(os.path.abspath(__file__))
rng = random.Random(SEED)
out = []
seen = set()


def add(payload, place):
    key = (payload, place)
    if key in seen or not payload:
        return
    if place == "header" and not all(0x20 <= ord(c) < 0x7F for c in payload):
        place = "json"  # a header carries visible ASCII; the replay would skip it
        key = (payload, place)
        if key in seen:
            return
    seen.add(key)
    out.append({"category": "benign", "place": place, "payload": payload})


def pick(places):
    return rng.choice(places)


TEXT = ["query", "json", "json", "form"]
ANY = ["query", "json", "json", "form", "cookie", "header"]

# ---------------------------------------------------------------------------------------------------------------
# Names with apostrophes, hyphens, particles, accents.

FIRST = ["Sean", "Siobhan", "Mary", "Patrick", "Aoife", "Liam", "Dario", "Giulia", "Marco", "Chiara", "Amadou",
         "Fatou", "D'Arcy", "Jean-Luc", "Anne-Marie", "José", "Zoë", "Björn", "Renée", "Nguyễn", "Ōta", "Kai",
         "Ta'Nisha", "De'Andre", "Ja'Marr", "Le'Veon", "O'Shea", "Shaquille", "Mo", "Élodie"]
LAST = ["O'Brien", "O'Connor", "O'Neill", "D'Angelo", "D'Souza", "D'Amico", "N'Diaye", "N'Golo", "L'Estrange",
        "Dell'Acqua", "Sant'Anna", "McDonald", "MacLeod", "van der Berg", "de la Cruz", "Smith-Jones", "Al-Hassan",
        "O'Sullivan", "O'Reilly", "D'Alessandro", "Da'Costa", "Ka'ahumanu", "Mc'Kenzie", "Fitzgerald", "Ó Briain"]
for _ in range(150):
    f, l = rng.choice(FIRST), rng.choice(LAST)
    form = rng.choice(["{f} {l}", "{l}, {f}", "{f} {l}", "Dr. {f} {l}", "{f} {l} Jr.", "{l}", "Mrs {l}", "{f} '{n}' {l}"])
    add(form.format(f=f, l=l, n=rng.choice(["Mac", "Bo", "Red", "Ace"])), pick(ANY))

# ---------------------------------------------------------------------------------------------------------------
# Prose that talks about SQL, HTML, shells and files, the way people write in tickets, reviews and forums.

SUBJ = ["I", "We", "Our team", "The customer", "My manager", "She", "He", "They", "The intern", "Support"]
SQL_PROSE = [
    "{s} need to select the best option and update the order before Friday.",
    "{s} want to drop the old plan and union the two teams into one group.",
    "Please select one or more items, or delete the cart and start again.",
    "{s} asked: where is the order from last week, and why was it deleted?",
    "The union meeting is on Monday; select members will update the board.",
    "{s} wrote a query that joins orders and customers, then groups by region.",
    "Insert the card, select 'Withdraw', and follow the prompts.",
    "How do I use a WHERE clause with ORDER BY in PostgreSQL?",
    "What's the difference between UNION and UNION ALL in SQL?",
    "{s} learned SQL: SELECT, INSERT, UPDATE and DELETE are the basics.",
    "Is it true that 1=1 in every database? Asking for a friend's homework.",
    "Drop me a line when the table is ready, or update me by email.",
    "Select the size (S, M or L) and the color, then click 'Add to cart'.",
    "{s} said the report's numbers don't add up; can we update them?",
    "The book 'SQL Antipatterns' explains why you shouldn't use EAV tables.",
    "Use prepared statements; never build a query by concatenating user input.",
    "Sleep well and benchmark the new laptop tomorrow.",
    "Our DBA says the 'users' table has 1,204 rows or so.",
    "Order by phone or online; delivery from 9 to 5.",
    "Choose 'and' or 'or' in the filter to combine conditions.",
    "It's a 'having it all' kind of day: select, drop, repeat.",
    "The exec summary is due; please update the deck and union the slides.",
    "Waitfor it... the delay was 5 minutes, not 5 hours.",
    "I'll be there at 5 o'clock, or 6 if the train's late.",
    "Can't login?' Try resetting your password or contact support.",
    "Rock 'n' roll; it's what we're selling, and it's selling well.",
    "He said \"that's not what I ordered\" and asked for a refund.",
    "The char limit is 280; cast your vote before midnight.",
    "Convert the file to PDF and concat the chapters.",
    "The table in room 4 is dropped off at noon; select chairs arrive later.",
]
for t in SQL_PROSE:
    for _ in range(3):
        add(t.format(s=rng.choice(SUBJ)), pick(TEXT + ["multipart_file"] if False else TEXT))

HTML_PROSE = [
    "The <p> element represents a paragraph; close it with </p> when you can.",
    "Use the <b> tag sparingly and prefer <strong> for importance.",
    "In HTML, a <table> contains <tr> rows and <td> cells.",
    "Wrap inline code in <code> and keyboard keys in <kbd>.",
    "Why does my <div> not center? I tried margin: 0 auto.",
    "The docs say to put the script tag at the end of the body element.",
    "Escape < and > as &lt; and &gt; when you print user input.",
    "A JavaScript alert is annoying; use a toast notification instead.",
    "Never use eval() on user input; JSON.parse is the right tool.",
    "x < y && y > z, so x < z (transitivity).",
    "If a < b and b < c then a < c.",
    "I <3 this product!!! <3 <3",
    "Price: <$50 for members, >$80 otherwise.",
    "Enter your name as <first> <last>, for example Jane Doe.",
    "The onload event fires after the page has loaded, per MDN.",
    "Use onclick handlers sparingly; addEventListener is better.",
    "The javascript: URL scheme is deprecated in many contexts.",
    "Book: JavaScript: The Good Parts by Douglas Crockford.",
    "JavaScript: The Definitive Guide, 7th edition (O'Reilly).",
    "Data: the new oil? Not quite, says the author.",
    "The <img> alt attribute describes the picture for screen readers.",
    "Do you support SVG uploads? Our logo is an .svg file.",
    "Our XSS training covers output encoding and Content-Security-Policy.",
    "<br> vs <br/>: both are fine in HTML5.",
    "Use <details> and <summary> for a simple disclosure widget.",
]
for t in HTML_PROSE:
    add(t, pick(TEXT))
    add(t, pick(TEXT))

SHELL_PROSE = [
    "Run the installer, then restart; if it fails, check the logs.",
    "Cat videos | dog videos | bird videos: pick one.",
    "The echo in the hall was loud; ping me when you're free.",
    "Tom & Jerry; the movie (1992) | rated G",
    "Use `ls` to list files and `cd` to change directories.",
    "rm is permanent, so back up your files first.",
    "Whoami? A question philosophers ask; not a command here.",
    "Our pipeline: build | test | deploy; each step gates the next.",
    "Please type your answer; then press Enter & wait.",
    "Uname and password are required (sic).",
    "The kids sleep at 8; we curl up with a book after.",
    "Wget, curl and httpie are all HTTP clients.",
    "Net user count grew 12% this quarter; systeminfo shows 16 GB RAM.",
    "The path is Documents > Work > 2024; see also ../README in the repo.",
    "Go up one folder with .. and list it again.",
    "Windows paths look like C:\\Users\\Public\\Documents.",
    "Config lives in ~/.config/app/settings.toml on Linux.",
    "Logs are in /var/log/app/ and rotate daily.",
]
for t in SHELL_PROSE:
    add(t, pick(TEXT))
    add(t, pick(TEXT))

# ---------------------------------------------------------------------------------------------------------------
# Markdown with inline HTML.

MD = [
    "**Bold** and _italic_ text, plus `inline code`.",
    "# Release notes\n\n- Fixed login bug\n- Added <kbd>Ctrl</kbd>+<kbd>S</kbd> shortcut",
    "See [the docs](https://docs.example.org/guide#install) for details.",
    "<details><summary>Show more</summary>\n\nHidden text here.\n</details>",
    "H<sub>2</sub>O and E = mc<sup>2</sup>",
    "| Name | Qty |\n|---|---|\n| Apples | 3 |\n| Pears & plums | 5 |",
    "<img src=\"https://upload.wikimedia.org/wikipedia/commons/a/a9/Example.jpg\" alt=\"Example\" width=\"200\">",
    "<a href=\"https://www.rust-lang.org/\">Rust</a> is a systems language.",
    "> Quote from O'Brien: \"It's done.\"",
    "1. Open the app\n2. Tap *Settings*\n3. Choose <b>Privacy</b>",
    "Line one<br>Line two<br/>Line three",
    "<p align=\"center\"><img src=\"https://raw.githubusercontent.com/rust-lang/rust-artwork/master/logo/rust-logo-blk.svg\" width=\"64\"></p>",
    "~~old price~~ **new price: $19.99**",
    "```js\nconst x = a && b || c;\n```",
    "```python\nprint(f\"Hello, {name}!\")\n```",
    "<!-- TODO: add screenshots -->\nSee below.",
    "<span style=\"color: #c00\">Warning:</span> back up first.",
    "<center>Welcome</center>",
    "![diagram](https://example.com/img/diagram.png \"Architecture\")",
    "Press <kbd>Shift</kbd> + <kbd>?</kbd> for help.",
    "<ul><li>One</li><li>Two & three</li></ul>",
    "<table><tr><th>Plan</th><th>Price</th></tr><tr><td>Pro</td><td>$9/mo</td></tr></table>",
    "<em>Note:</em> prices exclude VAT.",
    "<abbr title=\"HyperText Markup Language\">HTML</abbr> basics",
    "<mark>highlighted</mark> and <small>fine print</small>",
    "<blockquote>Simplicity is prerequisite for reliability.</blockquote>",
    "<hr>\n_Posted by D'Angelo_",
    "<h2 id=\"faq\">FAQ</h2>",
    "<code>SELECT</code> is a SQL keyword; see chapter 3.",
    "<pre>fn main() { println!(\"hi\"); }</pre>",
]
for m in MD:
    add(m, rng.choice(["json", "json", "form"]))
    add(m, "xml" if False else rng.choice(["json", "form", "query"]))

# ---------------------------------------------------------------------------------------------------------------
# Code snippets as JSON string values (a pastebin, a code-review tool, an LLM API).

CODE = [
    "for (let i = 0; i < items.length; i++) { total += items[i].price; }",
    "if (user && user.isActive || force) { return true; }",
    "const greeting = `Hello, ${name}!`;",
    "fetch('/api/items?page=2').then(r => r.json())",
    "def add(a, b):\n    return a + b",
    "with open('data.csv') as f:\n    rows = list(csv.reader(f))",
    "fn main() {\n    let v: Vec<i32> = vec![1, 2, 3];\n    println!(\"{:?}\", v);\n}",
    "match x { Some(v) if v > 0 => v, _ => 0 }",
    "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hi\") }",
    "public static void main(String[] args) { System.out.println(\"Hello\"); }",
    "SELECT id, name FROM users WHERE email = $1",
    "UPDATE accounts SET balance = balance - ? WHERE id = ?",
    "CREATE INDEX idx_orders_created ON orders (created_at);",
    "x = [i * i for i in range(10) if i % 2 == 0]",
    "let re = Regex::new(r\"^\\d{4}-\\d{2}-\\d{2}$\").unwrap();",
    "git commit -m \"Fix O'Brien's bug\"",
    "npm install --save-dev typescript",
    "docker run -p 8080:80 nginx:alpine",
    "kubectl get pods -n default",
    "const { data } = await axios.get(url, { params: { q: 'rust' } });",
    "<div className={styles.card}>{children}</div>",
    "export default function App() { return <h1>Hello</h1>; }",
    "import React, { useState } from 'react';",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }",
    "template<typename T> T max(T a, T b) { return a > b ? a : b; }",
    "SELECT COUNT(*) FROM orders GROUP BY status;",
    "$ cargo build --release",
    "echo \"Hello, world\"",
    "a := map[string]int{\"one\": 1}",
    "val xs = List(1, 2, 3).map(_ * 2)",
    "body { margin: 0; font-family: system-ui, sans-serif; }",
    "@media (max-width: 600px) { .nav { display: none; } }",
    "{\"name\": \"widget\", \"tags\": [\"a\", \"b\"]}",
    "<?xml version=\"1.0\"?><note><to>Tove</to></note>",
    "assert_eq!(parse(\"1+2\"), Ok(3));",
    "SELECT * FROM products WHERE price < 100 ORDER BY price;",
    "while (n --> 0) { step(); }",
    "try { risky(); } catch (e) { console.error(e); }",
    "String s = String.format(\"%s has %d items\", name, count);",
    "name = input('Your name: ')",
]
for c in CODE:
    add(c, "json")
    if not c.startswith(("SELECT", "UPDATE", "CREATE")):  # SQL statements once each: hard, but rare in APIs
        add(c, rng.choice(["json", "form"]))

# ---------------------------------------------------------------------------------------------------------------
# URLs to public hosts.

HOSTS = ["github.com", "en.wikipedia.org", "www.rust-lang.org", "docs.python.org", "developer.mozilla.org",
         "news.ycombinator.com", "www.bbc.co.uk", "www.example.com", "api.example.org", "cdn.jsdelivr.net",
         "www.youtube.com", "maps.google.com", "stackoverflow.com", "crates.io", "pypi.org", "www.nytimes.com",
         "hooks.slack.com", "s3.amazonaws.com", "storage.googleapis.com", "login.microsoftonline.com"]
PATHS = ["/", "/wiki/O'Brien", "/search?q=rust+lang&hl=en", "/issues/1234", "/watch?v=dQw4w9WgXcQ&t=42s",
         "/docs/3/library/json.html#json.loads", "/en-US/docs/Web/HTML/Element/script", "/a/b/c.html?x=1&y=2#top",
         "/products/salt-&-pepper", "/users/d'angelo/profile", "/img/logo.png", "/v1/items?sort=-price&limit=50",
         "/questions/11227809/why-is-processing-a-sorted-array-faster", "/path/with%20space", "/callback?code=abc123&state=xyz",
         "/download/report%202024.pdf", "/services/T000/B000/XXXX", "/bucket/key/file.txt", "/en/latest/", "/?utm_source=newsletter&utm_medium=email"]
for _ in range(160):
    u = rng.choice(["https://", "https://", "http://"]) + rng.choice(HOSTS) + rng.choice(PATHS)
    add(u, pick(["query", "json", "json", "form", "header", "cookie"]))

# ---------------------------------------------------------------------------------------------------------------
# JSON with legitimate `$` and `@` keys (JSON Schema, JSON-LD, OData, MongoDB-shaped but not operators).

for k in ["$schema", "$ref", "$id", "$comment", "$defs", "$anchor", "$vocabulary", "$dynamicRef", "$dynamicAnchor",
          "@context", "@type", "@id", "@value", "@language", "_id", "__typename", "odata.type", "@odata.etag",
          "$version", "$metadata", "first_name", "O'Brien", "user.name", "price$usd", "x-api-version", "a&b", "1=1",
          "data-id", "<tag>", "select", "order", "union_id", "$top", "$skip", "$filter", "$orderby", "$select",
          "$expand", "$count"]:
    add(k, "json_key")
for v in ["https://json-schema.org/draft/2020-12/schema", "#/components/schemas/User", "#/$defs/address",
          "https://schema.org", "Person", "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", "http://json-schema.org/draft-07/schema#",
          "name eq 'O''Brien' and age gt 30", "price desc, name asc", "startswith(Name, 'Mc')", "$100 off", "US$ 5.00",
          "Cost: $5; tax: $0.40", "${name} will be replaced by the template engine", "Use $HOME/.config for settings",
          "Total = $a + $b", "$$ savings $$", "#{count} items", "{{ username }} logged in", "Hi {{first_name}}, your order shipped"]:
    add(v, rng.choice(["json", "query", "form"]))

# ---------------------------------------------------------------------------------------------------------------
# Base64 and other opaque blobs, tokens, hashes, ids.

for _ in range(90):
    n = rng.choice([8, 12, 16, 24, 32, 48, 64, 96, 150])
    raw = bytes(rng.getrandbits(8) for _ in range(n))
    kind = rng.random()
    if kind < 0.4:
        v = base64.b64encode(raw).decode()
    elif kind < 0.6:
        v = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    elif kind < 0.75:
        v = raw.hex()
    elif kind < 0.9:
        hdr = base64.urlsafe_b64encode(b'{"alg":"ES256","typ":"JWT"}').decode().rstrip("=")
        pl = base64.urlsafe_b64encode(json.dumps({"sub": str(rng.randint(1, 10**6)), "iat": 1700000000 + rng.randint(0, 10**6)}).encode()).decode().rstrip("=")
        v = f"{hdr}.{pl}.{base64.urlsafe_b64encode(raw).decode().rstrip('=')}"
    else:
        v = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + raw).decode()
    add(v, pick(["query", "json", "json", "form", "cookie", "header"]))

# ---------------------------------------------------------------------------------------------------------------
# Search queries with quotes and operators.

TERMS = ["rust", "borrow checker", "async", "tokio", "o'reilly", "new york", "pizza", "vegan recipes", "used cars",
         "iphone 15", "c++", "c#", "node.js", "hotel", "paris", "cheap flights", "best laptop", "machine learning",
         "select", "union", "drop", "table", "order", "script", "alert", "where", "delete", "sleep"]
OPS = ['{a} AND {b}', '{a} OR {b}', '{a} NOT {b}', '"{a}" {b}', '"{a} {b}"', '{a} -{b}', '{a} +{b}', '({a} OR {b}) AND "{c}"',
       'title:"{a}" author:{b}', '{a} site:example.com', '{a} filetype:pdf', 'intitle:{a} "{b}"', '{a} | {b}', '{a} & {b}',
       "{a}'s {b}", '{a} near:{b}', '{a} -"{b}"', '{a}* {b}', '"{a}" OR "{b}"', '{a} before:2024-01-01', 'price:<50 {a}',
       'rating:>=4 {a}', '{a} {b} -{c}', '"{a}" -"{b}" +{c}']
for _ in range(220):
    a, b, c = rng.sample(TERMS, 3)
    add(rng.choice(OPS).format(a=a, b=b, c=c), pick(["query", "query", "json", "form"]))

# ---------------------------------------------------------------------------------------------------------------
# Emails, addresses, phones, dates, prices, product descriptions.

for _ in range(60):
    local = rng.choice(["john.doe", "o'connor", "jane+news", "d.angelo", "info", "sales-team", "first_last", "a.b.c"])
    dom = rng.choice(["example.com", "example.ie", "mail.example.org", "company.co.uk"])
    add(f"{local}@{dom}", pick(["query", "json", "form", "cookie"]))
STREETS = ["Rue de l'Église", "O'Connell Street", "Baker St", "Main St.", "Via dell'Orso", "Chemin d'Avully", "5th Ave"]
for _ in range(70):
    s = rng.choice(STREETS)
    add(rng.choice([f"{rng.randint(1, 300)} {s}, Apt #{rng.randint(1, 40)}", f"Flat {rng.randint(1, 9)}; {rng.randint(1, 99)} {s}",
                    f"c/o D'Souza & Sons, {rng.randint(1, 99)} {s} | Floor {rng.randint(1, 9)}", f"{s} {rng.randint(1, 99)}, 75001 Paris"]),
        pick(TEXT))
for _ in range(60):
    add(rng.choice([f"+1 ({rng.randint(200, 999)}) 555-{rng.randint(1000, 9999)}", f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z",
                    f"${rng.randint(1, 999)}.{rng.randint(0, 99):02d}", f"€ {rng.randint(1, 999)},{rng.randint(0, 99):02d}",
                    f"{rng.randint(1, 12)}/{rng.randint(1, 28)}/2024", f"{rng.randint(1, 99)}% off; {rng.randint(1, 5)} per customer",
                    f"1-{rng.randint(1, 9)} business days", f"{rng.randint(1, 9)}x{rng.randint(1, 9)} = {rng.randint(1, 81)}"]), pick(TEXT))

ADJ = ["Stainless", "Organic", "Vintage", "Heavy-duty", "Compact", "Wireless", "Hand-made", "Eco", "Premium"]
NOUN = ["salt & pepper mills", "drill; includes charger", "tote bag | canvas", "coffee beans (1 kg)", "desk lamp",
        "headphones", "cutting board", "\"chef's\" knife", "rock 'n' roll T-shirt", "50/50 blend", "Q&A cards"]
EXTRA = ["2-pack; dishwasher safe", "Black & Decker compatible", "ships in 1-2 days | free returns",
         "Size: S/M/L; color: red|blue", "100% cotton & recycled polyester", "Ben & Jerry's approved",
         "AT&T and T-Mobile", "fits 12\" & 15\" laptops", "Rated 4.5/5 (1,024 reviews)", "Select size below"]
for _ in range(110):
    add(f"{rng.choice(ADJ)} {rng.choice(NOUN)} - {rng.choice(EXTRA)}", pick(TEXT))

# ---------------------------------------------------------------------------------------------------------------
# File names (multipart uploads) and path segments.

FN = ["report (final) v2.pdf", "O'Reilly - Learning Rust.epub", "photo 2024-01-01 at 10.00.00.jpg", "résumé.docx",
      "data;backup.tar.gz", "my file & notes.txt", "C# notes.md", "Q1+Q2 results.xlsx", "invoice #1234.pdf",
      "D'Angelo_contract.pdf", "scan[1].png", "budget (draft) 50%.ods", "readme", "archive.tar.gz", "IMG_0001.HEIC",
      "Salt & Pepper.png", "1=1 proof.pdf", "select-menu.svg", "union-jack.png", "script.js", "index.html",
      "screenshot.png", "app.min.css", "setup.exe", "notes..txt", "~$budget.xlsx", ".gitignore", "CV - Ana O'Neill.pdf"]
for f in FN:
    add(f, "multipart_file")
    add(f, rng.choice(["json", "form"]))
SLUG = ["o-brien-and-sons", "2024-annual-report", "café", "c++", "hello world", "a&b", "salt-&-pepper", "d'angelo",
        "union-station", "select-comfort", "drop-shipping-guide", "100%-natural", "rock'n'roll", "tom+jerry", "q&a",
        "x=1", "naïve", "über", "東京", "señor", "file.tar.gz", "v1.2.3", "user@example.com", "~alice", "it's-fine"]
for s in SLUG:
    add(s, "path")
    add(s, rng.choice(["query", "form"]))

# ---------------------------------------------------------------------------------------------------------------
# User agents, cookies, XML bodies.

UA = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
      "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
      "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
      "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
      "curl/8.5.0", "python-requests/2.31.0", "okhttp/4.12.0", "PostmanRuntime/7.36.0", "Go-http-client/2.0",
      "axios/1.6.2", "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/UD1A.230803.041)", "Wget/1.21.4",
      "MyApp/3.2 (com.example.myapp; build:417; iOS 17.2.1) Alamofire/5.8.1", "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
      "Java/17.0.9", "reqwest/0.11", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
      "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "facebookexternalhit/1.1", "Apache-HttpClient/4.5.14 (Java/17)"]
for u in UA:
    add(u, "header")
COOK = ["en-US", "dark", "eyJ0aGVtZSI6ImRhcmsifQ", '{"consent":true,"ts":1700000000}', "a1b2c3d4e5f6", "GA1.2.1234567890.1700000000",
        "s%3Aabc.def", "fr_FR", "1", "true", "UTC+01:00", "last=O'Brien", "cart=3|12|7", "tz=Europe/Dublin", "v=2; ok",
        "sort=-price", "q=\"red shoes\"", "from=2024-01-01&to=2024-01-31"]
for c in COOK:
    add(c, "cookie")
XMLS = [
    '<?xml version="1.0" encoding="UTF-8"?><order id="42"><customer>Sean O\'Brien</customer><note>Leave at the door &amp; ring</note></order>',
    '<?xml version="1.0"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><GetPrice><Item>Salt &amp; Pepper</Item></GetPrice></soap:Body></soap:Envelope>',
    '<rss version="2.0"><channel><title>Dev news</title><item><title>Why SELECT * is slow</title><link>https://example.com/a</link></item></channel></rss>',
    '<note><to>D\'Angelo</to><body>Use &lt;script&gt; tags carefully.</body></note>',
    '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Updates</title><entry><title>Union meeting</title></entry></feed>',
    '<search><q>"exact phrase" AND cats -dogs</q><page>2</page></search>',
    '<user name="O&apos;Neill" email="o.neill@example.ie"/>',
    '<doc><code><![CDATA[if (a < b && c > d) { run(); }]]></code></doc>',
    '<?xml version="1.0"?><methodCall><methodName>blog.getPosts</methodName><params><param><value><int>5</int></value></param></params></methodCall>',
    '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10" fill="#c00"/></svg>',
    '<invoice><line qty="2" price="9.99">Ben &amp; Jerry\'s</line><total currency="EUR">19.98</total></invoice>',
    '<?xml version="1.0"?><config><path>/var/lib/app/data</path><url>https://api.example.org/v1</url></config>',
]
for x in XMLS:
    add(x, "xml")
for _ in range(40):
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}".replace("&", "&amp;").replace("'", "&apos;")
    text = rng.choice(SQL_PROSE).format(s=rng.choice(SUBJ)).replace("&", "&amp;").replace("<", "&lt;")
    add(f'<?xml version="1.0"?><review><author>{name}</author><rating>{rng.randint(1, 5)}</rating><text>{text}</text></review>', "xml")

# ---------------------------------------------------------------------------------------------------------------
# Hand-written tricky values.

TRICKY = [
    "O'Brien", "D'Angelo", "it's", "don't", "'quoted'", "\"double quoted\"", "5' 11\"", "6'2\"", "Rock 'n' Roll",
    "1 OR 2", "1-2", "-1", "--", "#1 best seller", "#hashtag", "100% pure", "a=b", "x==y", "1=1", "2>1",
    "a;b;c", "a|b|c", "a&b&c", "a && b", "a || b", "(a)", "[a]", "{a}", "<a>", "a<b>c", "<3", "</3", ":-)", ";-)",
    "...", "./", "~/", "/", "\\", "C:\\", "%", "%20", "100%25 sure", "50%off", "&amp;", "&lt;", "&#39;",
    "javascript", "script", "alert", "onload", "onerror", "union", "select", "drop table", "sleep", "exec", "eval",
    "cmd", "bash", "etc", "passwd", "root", "admin", "null", "undefined", "NaN", "true", "false", "0", "-0", "1e10",
    "Select all that apply", "Union Station, Chicago", "Drop-off at 5pm; pickup at 6", "Order #1234 -- thanks!",
    "echo chamber", "cat & dog", "sleep apnea", "benchmark results (2024)", "having fun", "Where's Wally?",
    "Who's on first?", "What's 1+1?", "Is 1=1?", "The 'or' operator", "'and' & 'or'", "Q: where? A: here.",
    "R&D; Q&A; P&L", "AT&T", "H&M", "M&M's", "Johnson & Johnson", "Procter & Gamble", "Barnes & Noble",
    "I'd like 2 eggs; over easy | toast", "a -- b", "x /* y */ z", "-- signed, Pat", "/* comment */",
    "Call me at 555-0100; ext. 12", "PS: don't forget", "re: your order", "Fwd: Re: Q&A", "RE: 'O'Brien' account",
    "50 < x < 100", "x > 5 AND y < 3", "score >= 90 or grade = 'A'", "if x then y else z", "size: 10; weight: 2kg",
    "https://example.com/?a=1&b=2", "mailto:o'brien@example.com", "tel:+15550100", "ftp.example.com", "www.example.com",
    "file.txt", "report.final.v2.docx", "~/Documents/notes.md", "src/main.rs", "C:/Program Files/App", "/home/alice/notes.md",
    "data:", "javascript: the good parts", "Java Script", "<b>bold</b>", "<i>italic</i>", "<p>Hello</p>", "<br>",
    "Hello <b>world</b> & friends", "<em>Note</em>: read this", "[link](https://example.com)", "{{ not a template }}? no: a note",
    "$5", "$ 5", "$", "${", "#{", "{{", "}}", "<%", "%>", "[[", "]]", "@", "@home", "user@host", "@channel please review",
    "ls", "id", "ps", "who", "date", "time", "more", "less", "top", "kill", "ping", "pong", "net", "type", "dir",
    "Ctrl+Alt+Del", "Alt+F4", "Cmd+Shift+P", "Tab", "Esc", "^C", "~", "`backticks`", "'single'", "\"double\"",
    "¿Qué?", "¡Hola!", "naïve café", "Zürich", "Ærøskøbing", "日本語のテキスト", "Привет, мир", "مرحبا", "שלום", "😀 emoji 🎉",
    "  leading and trailing spaces  ", "tab\tseparated\tvalues", "multi\nline\ntext", "semi;colon", "pipe|char", "amp&char",
    "1' ok", "it's 1=1 week", "O'Brien OR O'Neill", "Tom's and Jerry's", "Mary's 'special' cake",
]
for t in TRICKY:
    add(t, pick(TEXT))
    add(t, pick(["json", "form", "query", "cookie"]) if t.isprintable() and t.isascii() else "json")


def main():
    path = os.path.join(HERE, "benign.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for it in out:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")
    places = {}
    for it in out:
        places[it["place"]] = places.get(it["place"], 0) + 1
    print(len(out), places)


if __name__ == "__main__":
    main()
