// Portcullis dashboard. Plain JavaScript, no library. Every value from the API is put into the page with
// textContent or as a form value, never as HTML: event fields come from clients and may be hostile.
'use strict';

(function () {
  const API = '/admin/v1';
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || '';
  const page = document.body.dataset.page;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function status(text, bad) {
    const s = document.getElementById('status');
    if (!s) return;
    s.textContent = text || '';
    s.className = bad ? 'error' : '';
  }

  // Calls the admin API with the session cookie; writes carry the CSRF token.
  async function api(method, path, body) {
    const opts = { method: method, headers: { 'Accept': 'application/json' }, credentials: 'same-origin' };
    if (method !== 'GET') {
      opts.headers['X-CSRF-Token'] = csrf;
      if (body !== undefined) {
        opts.headers['Content-Type'] = 'application/json';
        opts.body = JSON.stringify(body);
      }
    }
    const r = await fetch(API + path, opts);
    if (r.status === 401) {
      window.location.assign('/admin/ui/login');
      throw new Error('logged out');
    }
    const text = await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!r.ok) {
      const msg = data && (data.detail || data.title) ? (data.title + (data.detail ? ': ' + data.detail : '')) : ('HTTP ' + r.status);
      throw new Error(msg);
    }
    return data;
  }

  function fillRows(tbody, rows, cells) {
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
    for (const row of rows) {
      const tr = el('tr');
      for (const c of cells(row)) {
        const td = el('td');
        if (c instanceof Node) td.appendChild(c); else td.textContent = c === undefined || c === null ? '' : String(c);
        tr.appendChild(td);
      }
      tbody.appendChild(tr);
    }
  }

  function list(v) {
    return (v || '').split(',').map(function (s) { return s.trim(); }).filter(function (s) { return s.length > 0; });
  }

  function fmt(n) {
    if (n === null || n === undefined) return '–';
    return Number(n).toLocaleString('en-US', { maximumFractionDigits: 2 });
  }

  // ---- charts: lines on a canvas, drawn here ----
  function drawChart(canvas, points, lines) {
    const ctx = canvas.getContext('2d');
    const w = canvas.width, h = canvas.height, pad = 30;
    ctx.clearRect(0, 0, w, h);
    let max = 1;
    for (const p of points) for (const l of lines) { const v = l.get(p); if (v !== null && v > max) max = v; }
    ctx.strokeStyle = '#ccd';
    ctx.fillStyle = '#667';
    ctx.font = '11px sans-serif';
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = pad / 2 + (h - pad) * i / 4;
      ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w, y); ctx.stroke();
      ctx.fillText(fmt(max * (4 - i) / 4), 0, y + 4);
    }
    // x is time: the newest point at the right edge, five minutes across; a missing second breaks the line.
    const n = 300;
    const tEnd = points.length ? points[points.length - 1].t : 0;
    lines.forEach(function (l, li) {
      ctx.strokeStyle = l.color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      let started = false;
      let lastT = null;
      points.forEach(function (p) {
        const v = l.get(p);
        const age = tEnd - p.t;
        if (v === null || v === undefined || age >= n) { started = false; return; }
        if (lastT !== null && p.t - lastT > 1) started = false;
        lastT = p.t;
        const x = pad + (w - pad) * (n - 1 - age) / (n - 1);
        const y = pad / 2 + (h - pad) * (1 - v / max);
        if (started) ctx.lineTo(x, y); else { ctx.moveTo(x, y); started = true; }
      });
      ctx.stroke();
      ctx.fillStyle = l.color;
      ctx.fillText(l.name, pad + 6 + li * 90, 12);
    });
  }

  // ---- live view ----
  function live() {
    let series = [];
    function render(s) {
      document.getElementById('rps').textContent = fmt(s.requests.per_second);
      document.getElementById('rejps').textContent = fmt(s.rejections.per_second);
      document.getElementById('latency').textContent =
        fmt(s.latency.p50_ms) + ' / ' + fmt(s.latency.p90_ms) + ' / ' + fmt(s.latency.p99_ms);
      document.getElementById('authn').textContent = fmt(s.authn_failures.per_second);
      document.getElementById('ratelimited').textContent = fmt(s.rate_limited.per_second);
      document.getElementById('inspect').textContent = fmt(s.inspect_hits.per_second);
      document.getElementById('requests-total').textContent = fmt(s.requests.total);
      fillRows(document.querySelector('#by-type tbody'), s.rejections_by_type,
        function (t) { return [t.type, t.status, fmt(t.per_second), fmt(t.total)]; });
      fillRows(document.querySelector('#by-method tbody'), s.authn_failures_by_method,
        function (m) { return [m.method, fmt(m.per_second), fmt(m.total)]; });
      fillRows(document.querySelector('#top-principals tbody'), s.top_principals,
        function (t) { return [t.name, fmt(t.requests), fmt(t.refusals)]; });
      fillRows(document.querySelector('#top-ips tbody'), s.top_client_ips,
        function (t) { return [t.name, fmt(t.requests), fmt(t.refusals)]; });
      drawChart(document.getElementById('chart-rps'), series, [
        { name: 'requests/s', color: '#2a6ebb', get: function (p) { return p.requests; } },
        { name: 'rejections/s', color: '#c0392b', get: function (p) { return p.rejections; } },
      ]);
      drawChart(document.getElementById('chart-latency'), series, [
        { name: 'p50', color: '#27ae60', get: function (p) { return p.p50_ms; } },
        { name: 'p90', color: '#e67e22', get: function (p) { return p.p90_ms; } },
        { name: 'p99', color: '#8e44ad', get: function (p) { return p.p99_ms; } },
      ]);
    }
    api('GET', '/stats').then(function (s) {
      series = s.series || [];
      render(s);
      const es = new EventSource(API + '/stats/stream');
      es.addEventListener('stats', function (m) {
        let s2;
        try { s2 = JSON.parse(m.data); } catch (e) { return; }
        for (const p of s2.series || []) {
          if (series.length === 0 || series[series.length - 1].t < p.t) series.push(p);
        }
        while (series.length > 300) series.shift();
        render(s2);
        status('');
      });
      es.onerror = function () {
        status('Live stream interrupted; retrying…', true);
        // An ended session: back to the login form (api() goes there on 401).
        api('GET', '/whoami').catch(function (err) { if (err.message === 'logged out') es.close(); });
      };
    }).catch(function (e) { status(e.message, true); });
  }

  // ---- events ----
  function events() {
    const tbody = document.querySelector('#events tbody');
    const fKind = document.getElementById('f-kind');
    const fSev = document.getElementById('f-severity');
    const fText = document.getElementById('f-text');
    const all = [];
    function matches(e) {
      if (fKind.value && e.type !== fKind.value) return false;
      if (fSev.value && e.severity !== fSev.value) return false;
      const q = fText.value.trim().toLowerCase();
      if (q && JSON.stringify(e).toLowerCase().indexOf(q) < 0) return false;
      return true;
    }
    function detail(e) {
      const hint = document.querySelector('#event-detail p');
      if (hint) hint.hidden = true;
      const dl = document.getElementById('event-fields');
      while (dl.firstChild) dl.removeChild(dl.firstChild);
      const flat = [];
      for (const k of Object.keys(e)) {
        if (k === 'attrs' && e.attrs && typeof e.attrs === 'object') {
          for (const a of Object.keys(e.attrs)) flat.push(['attrs.' + a, e.attrs[a]]);
        } else flat.push([k, e[k]]);
      }
      for (const [k, v] of flat) {
        dl.appendChild(el('dt', k));
        dl.appendChild(el('dd', typeof v === 'object' ? JSON.stringify(v) : v));
      }
    }
    function row(e) {
      const tr = el('tr');
      for (const c of [e.time, e.type, e.severity, e.principal, e.client_ip || e.client_ip_hash, e.path, e.reason]) {
        tr.appendChild(el('td', c === undefined ? '' : c));
      }
      tr.className = 'sev-' + String(e.severity || '').replace(/[^a-z]/g, '');
      tr.tabIndex = 0;
      tr.addEventListener('click', function () { detail(e); });
      tr.addEventListener('keydown', function (k) { if (k.key === 'Enter') detail(e); });
      return tr;
    }
    function redraw() {
      while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
      for (const e of all) if (matches(e)) tbody.appendChild(row(e));
    }
    function add(e, front) {
      if (front) all.unshift(e); else all.push(e);
      while (all.length > 500) all.pop();
    }
    for (const f of [fKind, fSev]) f.addEventListener('change', redraw);
    fText.addEventListener('input', redraw);
    api('GET', '/events?limit=100').then(function (d) {
      for (const e of (d && d.items) || []) add(e, false);
      redraw();
      const es = new EventSource(API + '/events/stream');
      const st = document.getElementById('stream-state');
      es.onopen = function () { st.textContent = 'live'; };
      es.addEventListener('security', function (m) {
        let e;
        try { e = JSON.parse(m.data); } catch (x) { return; }
        add(e, true);
        if (matches(e)) tbody.insertBefore(row(e), tbody.firstChild);
      });
      es.onerror = function () {
        st.textContent = 'reconnecting…';
        api('GET', '/whoami').catch(function (err) { if (err.message === 'logged out') es.close(); });
      };
    }).catch(function (e) { status(e.message, true); });
  }

  // ---- keys ----
  function keys() {
    const table = document.getElementById('keys');
    const tbody = table.querySelector('tbody');
    const write = table.dataset.write === '1';
    const more = document.getElementById('keys-more');
    let cursor = null;
    let items = [];
    function actions(k) {
      const span = el('span');
      if (!write || k.status === 'revoked' || k.status === 'rotated' || k.status === 'expired') return span;
      const rot = el('button', 'Rotate');
      rot.type = 'button';
      rot.dataset.id = k.id;
      rot.className = 'rotate';
      rot.addEventListener('click', function () {
        api('POST', '/keys/' + encodeURIComponent(k.id) + '/rotate', {}).then(function (d) {
          showSecret(d.secret);
          status('Rotated ' + k.id + '; the old key stays valid until ' + (d.rotated.grace_until || 'now') + '.');
          load(true);
        }).catch(function (e) { status(e.message, true); });
      });
      const rev = el('button', 'Revoke');
      rev.type = 'button';
      rev.dataset.id = k.id;
      rev.className = 'revoke danger';
      rev.addEventListener('click', function () {
        api('POST', '/keys/' + encodeURIComponent(k.id) + '/revoke', {}).then(function () {
          status('Revoked ' + k.id + '.');
          load(true);
        }).catch(function (e) { status(e.message, true); });
      });
      span.appendChild(rot);
      span.appendChild(rev);
      return span;
    }
    function render() {
      fillRows(tbody, items, function (k) {
        return [k.id, k.authenticator, k.principal, (k.roles || []).join(', '), k.status, k.created_at, k.expires_at || '', actions(k)];
      });
      Array.prototype.forEach.call(tbody.rows, function (tr, i) { tr.dataset.id = items[i].id; tr.dataset.status = items[i].status; });
    }
    function load(reset) {
      if (reset) { cursor = null; items = []; }
      const q = cursor ? '?limit=100&cursor=' + encodeURIComponent(cursor) : '?limit=100';
      return api('GET', '/keys' + q).then(function (d) {
        items = items.concat((d && d.items) || []);
        cursor = d ? d.next_cursor : null;
        more.hidden = !cursor;
        render();
      }).catch(function (e) { status(e.message, true); });
    }
    function showSecret(secret) {
      const box = document.getElementById('key-secret');
      if (!box) return;
      document.getElementById('key-secret-value').textContent = secret;
      box.hidden = false;
    }
    more.addEventListener('click', function () { load(false); });
    const form = document.getElementById('key-create');
    if (form) {
      form.addEventListener('submit', function (ev) {
        ev.preventDefault();
        const body = { principal: document.getElementById('key-principal').value.trim() };
        const auth = document.getElementById('key-authenticator').value.trim();
        if (auth) body.authenticator = auth;
        const roles = list(document.getElementById('key-roles').value);
        if (roles.length) body.roles = roles;
        const scopes = list(document.getElementById('key-scopes').value);
        if (scopes.length) body.scopes = scopes;
        const cidrs = list(document.getElementById('key-cidrs').value);
        if (cidrs.length) body.cidrs = cidrs;
        const exp = document.getElementById('key-expires').value.trim();
        if (exp) body.expires_in = exp;
        api('POST', '/keys', body).then(function (d) {
          showSecret(d.secret);
          status('Created ' + d.key.id + ' for ' + d.key.principal + '.');
          form.reset();
          load(true);
        }).catch(function (e) { status(e.message, true); });
      });
      document.getElementById('key-secret-copy').addEventListener('click', function () {
        const v = document.getElementById('key-secret-value').textContent;
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(v).then(function () { status('Copied.'); }, function () { status('Select the key and copy it.', true); });
        } else {
          const r = document.createRange();
          r.selectNodeContents(document.getElementById('key-secret-value'));
          const sel = window.getSelection();
          sel.removeAllRanges();
          sel.addRange(r);
          status('Selected: press Ctrl+C to copy.');
        }
      });
      document.getElementById('key-secret-hide').addEventListener('click', function () {
        document.getElementById('key-secret-value').textContent = '';
        document.getElementById('key-secret').hidden = true;
      });
    }
    load(true);
  }

  // ---- bans ----
  function bans() {
    const table = document.getElementById('bans');
    const tbody = table.querySelector('tbody');
    const write = table.dataset.write === '1';
    function load() {
      return api('GET', '/bans').then(function (d) {
        const items = (d && d.items) || [];
        fillRows(tbody, items, function (b) {
          let lift = el('span');
          if (write) {
            lift = el('button', 'Lift', 'lift');
            lift.type = 'button';
            lift.addEventListener('click', function () {
              api('DELETE', '/bans/' + encodeURIComponent(b.id)).then(function () {
                status('Lifted the ban on ' + b.target + '.');
                load();
              }).catch(function (e) { status(e.message, true); });
            });
          }
          return [b.kind, b.target, b.until, b.reason, b.source, lift];
        });
        Array.prototype.forEach.call(tbody.rows, function (tr, i) { tr.dataset.target = items[i].target; });
      }).catch(function (e) { status(e.message, true); });
    }
    const form = document.getElementById('ban-add');
    if (form) {
      form.addEventListener('submit', function (ev) {
        ev.preventDefault();
        const body = {
          kind: document.getElementById('ban-kind').value,
          target: document.getElementById('ban-target').value.trim(),
          duration: document.getElementById('ban-duration').value.trim(),
        };
        const reason = document.getElementById('ban-reason').value.trim();
        if (reason) body.reason = reason;
        api('POST', '/bans', body).then(function (b) {
          status('Banned ' + b.target + ' until ' + b.until + '.');
          load();
        }).catch(function (e) { status(e.message, true); });
      });
    }
    load();
  }

  // ---- health ----
  function health() {
    const tbody = document.querySelector('#health tbody');
    function load() {
      api('GET', '/health').then(function (d) {
        const rows = [];
        for (const u of (d && d.upstreams) || []) {
          for (const t of u.targets || []) rows.push({ name: u.name, address: t.address, healthy: t.healthy });
        }
        fillRows(tbody, rows, function (r) {
          return [r.name, r.address, el('span', r.healthy ? 'healthy' : 'down', r.healthy ? 'ok' : 'bad')];
        });
      }).catch(function (e) { status(e.message, true); });
    }
    load();
    setInterval(load, 5000);
  }

  // ---- anomalies ----
  function anomalies() {
    const actions = document.getElementById('anomaly-actions');
    const write = actions.dataset.write === '1';
    const alertRows = document.querySelector('#anomaly-alerts tbody');
    function when(ms) { return ms ? new Date(ms).toISOString().replace('.000Z', 'Z') : ''; }
    function num(x) { return typeof x === 'number' ? (Math.round(x * 1000) / 1000) : ''; }
    function load() {
      api('GET', '/anomaly/status').then(function (s) {
        document.getElementById('anomaly-status').textContent =
          'Mode ' + s.mode + ' · ' + s.entities + ' entities · ' + s.alerts + ' alerts · ' + s.dropped + ' records dropped';
      }).catch(function (e) { status(e.message, true); });
      api('GET', '/anomaly/actions').then(function (d) {
        const items = (d && d.items) || [];
        fillRows(actions.querySelector('tbody'), items, function (a) {
          let lift = el('span');
          if (write) {
            lift = el('button', 'Lift', 'lift');
            lift.type = 'button';
            lift.addEventListener('click', function () {
              api('DELETE', '/anomaly/actions/' + encodeURIComponent(a.id)).then(function () {
                status('Lifted the ' + a.kind + ' on ' + a.target + '.');
                load();
              }).catch(function (e) { status(e.message, true); });
            });
          }
          const holds = !a.shared ? 'this node' : (a.origin === 'here' ? 'fleet' : 'fleet (from ' + a.origin + ')');
          return [a.kind, a.target, a.detector, a.alert, when(a.expires_ms), a.rate, holds, lift];
        });
        Array.prototype.forEach.call(actions.querySelector('tbody').rows, function (tr, i) { tr.dataset.target = items[i].target; });
      }).catch(function (e) { status(e.message, true); });
      api('GET', '/anomaly/alerts?limit=100').then(function (d) {
        const items = (d && d.items) || [];
        fillRows(alertRows, items, function (a) {
          return [a.id, when(a.at_ms), a.detector, a.entity.kind + ' ' + a.entity.label, a.feature, num(a.observed),
            num(a.baseline), num(a.score), a.window_s + ' s', a.actions.join(', ') + (a.enforced ? '' : ' (monitor)'),
            a.explanation];
        });
        Array.prototype.forEach.call(alertRows.rows, function (tr, i) { tr.dataset.detector = items[i].detector; });
      }).catch(function (e) { status(e.message, true); });
    }
    load();
    setInterval(load, 5000);
  }

  const pages = { live: live, events: events, keys: keys, bans: bans, anomalies: anomalies, health: health };
  if (pages[page]) pages[page]();
})();
