#!/usr/bin/env python3
"""Replays the WAF corpus (tests/corpus/*.jsonl) through one proxy, and reports two replays side by side.

    waf_replay.py replay PORT CORPUS_DIR OUT.json [PASSES]
    waf_replay.py report NAME=RESULT.json[:CPU_US] ...

`replay` sends every corpus line once, in its place, on one keep-alive HTTP/1.1 connection to 127.0.0.1:PORT,
encoded exactly as tests/waf_corpus.rs does (tests/corpus/README.md has the table), and writes one status per
line (None when the place cannot carry the payload). With PASSES > 1 it sends the whole corpus again that many
times minus one, without recording, so that a CPU measurement around it covers more requests; it prints the
number of requests sent. Python 3 standard library only.

`report` prints, per category, the share of attacks each proxy stopped (any 4xx: neither proxy forwarded them)
and the share of benign values it did not pass with a 2xx, plus the CPU microseconds per request given to it.
"""

import json
import os
import socket
import sys

CATEGORIES = ["sqli", "xss", "cmdi", "traversal", "ssrf", "template", "nosql", "xpath", "ldap",
              "deserialization", "xxe"]
BOUNDARY = "corpus-boundary-7d3f9a1c"


def load(corpus_dir):
    cases = []
    for cat in CATEGORIES + ["benign"]:
        with open(os.path.join(corpus_dir, cat + ".jsonl"), encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    cases.append(json.loads(line))
    return cases


def pct(s, form=False):
    out = []
    for b in s.encode("utf-8"):
        c = chr(b)
        if c.isascii() and (c.isalnum() or c in "-._~"):
            out.append(c)
        elif form and c == " ":
            out.append("+")
        else:
            out.append("%%%02X" % b)
    return "".join(out)


def visible_ascii(s):
    return all(c == "\t" or 0x20 <= ord(c) < 0x7F for c in s)


def request(i, case):
    """The request bytes for one case, or None when its place cannot carry the payload."""
    p, place = case["payload"], case["place"]

    def get(target, extra=""):
        return f"GET {target} HTTP/1.1\r\nHost: corpus.test\r\nx-corpus-id: {i}\r\n{extra}\r\n".encode()

    def post(target, ctype, body):
        head = (f"POST {target} HTTP/1.1\r\nHost: corpus.test\r\nx-corpus-id: {i}\r\ncontent-type: {ctype}\r\n"
                f"content-length: {len(body)}\r\n\r\n")
        return head.encode() + body

    if place == "query":
        return get("/echo/search?q=" + pct(p))
    if place == "path":
        return get("/echo/" + pct(p))
    if place == "header":
        v = p.strip(" \t")
        if not v or not visible_ascii(v):
            return None
        return get("/echo/h", f"user-agent: {v}\r\n")
    if place == "cookie":
        return get("/echo/c", f"cookie: sid=abc123; q={pct(p)}\r\n")
    if place == "json":
        return post("/echo/j", "application/json", json.dumps({"q": p}, separators=(",", ":"), ensure_ascii=False).encode())
    if place == "json_key":
        return post("/echo/j", "application/json", json.dumps({"q": {p: "1"}}, separators=(",", ":"), ensure_ascii=False).encode())
    if place == "form":
        return post("/echo/f", "application/x-www-form-urlencoded", ("q=" + pct(p, form=True)).encode())
    if place == "xml":
        return post("/echo/x", "application/xml", p.encode())
    if place == "multipart_file":
        if any(c in p for c in '"\r\n') or BOUNDARY in p or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in p):
            return None
        body = (f"--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"{p}\"\r\n"
                f"content-type: application/octet-stream\r\n\r\nhello\r\n--{BOUNDARY}--\r\n").encode()
        return post("/echo/m", f"multipart/form-data; boundary={BOUNDARY}", body)
    raise SystemExit(f"unknown place {place}")


class Conn:
    def __init__(self, port):
        self.port = port
        self.sock = None
        self.buf = b""

    def close(self):
        if self.sock:
            self.sock.close()
        self.sock = None
        self.buf = b""

    def _read_more(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        self.buf += data

    def _read_until(self, marker):
        while marker not in self.buf:
            self._read_more()
        i = self.buf.index(marker)
        out, self.buf = self.buf[:i], self.buf[i + len(marker):]
        return out

    def _read_n(self, n):
        while len(self.buf) < n:
            self._read_more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def exchange(self, req):
        """Sends one request, reads one response; returns (status, keep_alive)."""
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(req)
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            self._read_n(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self._read_until(b"\r\n").split(b";")[0], 16)
                self._read_n(size + 2) if size else self._read_until(b"\r\n")
                if not size:
                    break
        elif status not in (204, 304):
            while True:  # body until close
                try:
                    self._read_more()
                except ConnectionError:
                    break
            return status, False
        return status, headers.get("connection", "").lower() != "close"


def replay(port, corpus_dir, out_path, passes=1):
    cases = load(corpus_dir)
    reqs = [request(i, c) for i, c in enumerate(cases)]
    conn = Conn(port)
    statuses = []
    sent = 0
    for n in range(passes):
        for r in reqs:
            if r is None:
                if n == 0:
                    statuses.append(None)
                continue
            status = 0
            for _ in range(2):  # one retry on a fresh connection when the server closed this one
                try:
                    status, keep = conn.exchange(r)
                    if not keep:
                        conn.close()
                    break
                except (ConnectionError, OSError, ValueError, IndexError):
                    conn.close()
            sent += 1
            if n == 0:
                statuses.append(status)
    conn.close()
    with open(out_path, "w") as f:
        json.dump({"statuses": statuses, "categories": [c["category"] for c in cases]}, f)
    print(sent)


def report(args):
    runs = []
    for a in args:
        name, _, rest = a.partition("=")
        path, _, cpu = rest.partition(":")
        with open(path) as f:
            data = json.load(f)
        runs.append((name, data, float(cpu) if cpu else None))
    cats = CATEGORIES
    summary = {}
    print("%-16s %7s" % ("category", "cases") + "".join("  %22s" % (n + " stopped") for n, _, _ in runs))
    totals = {n: [0, 0] for n, _, _ in runs}
    for cat in cats + ["benign"]:
        row = None
        cells = []
        for name, data, _ in runs:
            pairs = [(c, s) for c, s in zip(data["categories"], data["statuses"]) if c == cat and s is not None]
            judged = len(pairs)
            if cat == "benign":
                bad = sum(1 for _, s in pairs if not (200 <= s < 300))
                cells.append("  %22s" % ("fp %d/%d = %.1f%%" % (bad, judged, 100.0 * bad / max(judged, 1))))
                summary[(name, "fp")] = 100.0 * bad / max(judged, 1)
            else:
                stopped = sum(1 for _, s in pairs if 400 <= s < 500)
                totals[name][0] += stopped
                totals[name][1] += judged
                cells.append("  %22s" % ("%d/%d = %.1f%%" % (stopped, judged, 100.0 * stopped / max(judged, 1))))
            row = judged
        print("%-16s %7s" % (cat, row) + "".join(cells))
    for name, _, cpu in runs:
        t = totals[name]
        summary[(name, "det")] = 100.0 * t[0] / max(t[1], 1)
    print("%-16s %7s" % ("all attacks", totals[runs[0][0]][1]) +
          "".join("  %22s" % ("%.1f%%" % summary[(n, "det")]) for n, _, _ in runs))
    print("%-16s %7s" % ("cpu us/request", "") +
          "".join("  %22s" % ("%.1f" % cpu if cpu is not None else "-") for _, _, cpu in runs))
    byname = {n: cpu for n, _, cpu in runs}
    print()
    extra = []
    for waf, plain in (("portcullis", "portcullis-plain"), ("modsecurity", "nginx-plain")):
        if byname.get(waf) is not None and byname.get(plain) is not None:
            extra.append("%s %.1f" % (waf, byname[waf] - byname[plain]))
    if extra:
        print("waf cpu us/request over the same proxy without it: " + ", ".join(extra))
    if byname.get("portcullis") and byname.get("modsecurity"):
        print("portcullis/modsecurity cpu-per-request ratio: %.3f" % (byname["portcullis"] / byname["modsecurity"]))
    else:
        print("portcullis/modsecurity cpu-per-request ratio: n/a")
    for n in ("portcullis", "modsecurity"):
        if (n, "det") in summary:
            print("%s detection: %.1f%% fp: %.1f%%" % (n, summary[(n, "det")], summary[(n, "fp")]))
        else:
            print("%s detection: n/a fp: n/a" % n)


def main():
    if len(sys.argv) >= 5 and sys.argv[1] == "replay":
        replay(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]) if len(sys.argv) > 5 else 1)
    elif len(sys.argv) >= 3 and sys.argv[1] == "report":
        report(sys.argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
