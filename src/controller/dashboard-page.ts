/**
 * The page the controller serves at `GET /dashboard` (dashboard.ts): one self-contained HTML document —
 * its style and script inline, no framework, nothing fetched but the controller's own event stream — that
 * draws each cluster and its instances, and lists moves, failovers, joins and failures as they come.
 *
 *   res.end(DASHBOARD_PAGE); // text/html
 *
 * What it shows, for a test or a reader of the DOM: `.cluster[data-cluster]` per cluster;
 * `.inst[data-instance][data-state][data-flows]` per instance; `#events tr[data-kind]` per event, newest
 * first, with `data-flow`, `data-from`, `data-to` (moves), `data-id` (failovers, instances) and `data-change`
 * (instances: joined, failed, left); on live events, `data-arrived-ms` (from the controller recording the
 * event, its `at`, to the page's handler for it) and `data-delay-ms` (to the next animation frame after the
 * row went in: when it was shown), both on the one clock of the machine that runs controller and browser.
 *
 * The script avoids backquotes and dollar-brace so that it can sit in this template literal as it is.
 */
export const DASHBOARD_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>nfstate — live</title>
<link rel="icon" href="data:,">
<style>
  :root { --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; --line: #d0d7de; --muted: #57606a; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 13px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; background: #f6f8fa; color: #1f2328; }
  header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 6px 18px; padding: 10px 16px;
    background: #fff; border-bottom: 1px solid var(--line); }
  header h1 { font-size: 16px; margin: 0; }
  .badge { display: inline-block; padding: 1px 7px; border-radius: 10px; font-size: 12px; background: #eaeef2; }
  .badge.live, .badge.ok { background: #dafbe1; color: var(--ok); }
  .badge.stale, .badge.stalled, .badge.joining { background: #fff8c5; color: var(--warn); }
  .badge.down, .badge.failing, .badge.failed { background: #ffebe9; color: var(--bad); }
  .totals { display: flex; flex-wrap: wrap; gap: 4px 14px; color: var(--muted); }
  .totals b { color: #1f2328; font-weight: 600; }
  main { padding: 12px 16px; display: grid; gap: 12px; }
  #clusters { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 12px; }
  .cluster { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; }
  .cluster h2 { font-size: 14px; margin: 0 0 6px; }
  .cluster h2 small { color: var(--muted); font-weight: normal; margin-left: 8px; }
  .members { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 8px; }
  .inst { border: 1px solid var(--line); border-left: 4px solid var(--ok); border-radius: 4px; padding: 6px 8px;
    transition: background-color 0.6s; }
  .inst.joining { border-left-color: var(--warn); }
  .inst.failed { border-left-color: var(--bad); background: #ffebe9; }
  .inst.overloaded .bar i { background: var(--bad); }
  .inst.flash { background: #fff8c5; }
  .inst .head { display: flex; gap: 8px; align-items: baseline; }
  .inst .head b { font-size: 14px; }
  .inst .head .sec { color: var(--muted); flex: 1; }
  .bar { height: 6px; background: #eaeef2; border-radius: 3px; margin: 5px 0 4px; overflow: hidden; }
  .bar i { display: block; height: 100%; background: #0969da; }
  dl { display: grid; grid-template-columns: auto 1fr; gap: 0 10px; margin: 0; }
  dt { color: var(--muted); }
  dd { margin: 0; font-variant-numeric: tabular-nums; }
  #feed { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; }
  #feed h2 { font-size: 14px; margin: 0 0 6px; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #eaeef2; vertical-align: top; }
  th { color: var(--muted); font-weight: 600; white-space: nowrap; }
  td.nowrap { white-space: nowrap; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
  .flow { font-family: ui-monospace, monospace; font-size: 11px; color: var(--muted); }
  tr.aborted td { color: var(--bad); }
  tr.history td { color: var(--muted); }
  tr.fresh { animation: fresh 2s ease-out; }
  @keyframes fresh { from { background: #fff8c5; } to { background: transparent; } }
</style>
</head>
<body>
<header>
  <h1>nfstate</h1>
  <span id="conn" class="badge">connecting…</span>
  <div class="totals" id="totals"></div>
</header>
<main>
  <div id="clusters"></div>
  <section id="feed">
    <h2>Moves, failovers and membership</h2>
    <table>
      <thead><tr><th>time</th><th>event</th><th>what</th><th class="num">duration</th><th class="num">state</th>
        <th>detail</th><th class="num">shown after</th></tr></thead>
      <tbody id="events"></tbody>
    </table>
  </section>
</main>
<script>
(function () {
  'use strict';
  var MAX_ROWS = 100;
  var clusters = [];
  var statsMs = 500;
  var statsAt = 0;
  var counts = { move: 0, failover: 0 };
  var lastDelay = null;
  var flashUntil = {};
  var source = null;

  function now() { return performance.timeOrigin + performance.now(); }
  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function num(n, digits) {
    if (n === null || n === undefined) return '–';
    return digits === undefined ? String(Math.round(n)) : n.toFixed(digits);
  }
  function bytes(n) {
    if (n === null || n === undefined) return '–';
    if (n < 1024) return Math.round(n) + ' B';
    if (n < 1048576) return (n / 1024).toFixed(1) + ' KiB';
    return (n / 1048576).toFixed(1) + ' MiB';
  }
  function ms(n) { return n === null || n === undefined ? '–' : (n < 10 ? n.toFixed(2) : n.toFixed(1)) + ' ms'; }
  function time(at) {
    var d = new Date(at);
    var msPart = String(d.getMilliseconds());
    while (msPart.length < 3) msPart = '0' + msPart;
    return d.toTimeString().slice(0, 8) + '.' + msPart;
  }
  var HEALTH_RANK = { ok: 0, stalled: 1, failing: 2 };

  function instances() {
    var all = [];
    clusters.forEach(function (c) { all = all.concat(c.instances); });
    return all;
  }

  function renderTotals() {
    var all = instances();
    var live = all.filter(function (i) { return i.state === 'live'; }).length;
    var flows = 0, pps = 0, lag = null, health = null;
    all.forEach(function (i) {
      flows += i.flows || 0;
      pps += i.pps || 0;
      var m = i.metrics;
      if (m && m.replication_lag_ms !== null && (lag === null || m.replication_lag_ms > lag)) lag = m.replication_lag_ms;
      if (m && m.strong && (health === null || HEALTH_RANK[m.strong.health] > HEALTH_RANK[health])) health = m.strong.health;
    });
    var t = $('totals');
    t.replaceChildren();
    function item(label, value, cls) {
      var s = el('span', null, label + ' ');
      var b = el('b', cls || null, value);
      s.appendChild(b);
      t.appendChild(s);
      return b;
    }
    item('clusters', clusters.filter(function (c) { return c.id !== null; }).length);
    item('instances', live + ' live / ' + all.length);
    item('flows', flows);
    item('packets/s', Math.round(pps));
    item('replication lag (max)', ms(lag));
    item('global state', health === null ? 'n/a' : health, health === null ? null : 'badge ' + health).id = 'health';
    item('moves', counts.move).id = 'moves';
    item('failovers', counts.failover).id = 'failovers';
    item('last event shown after', lastDelay === null ? '–' : ms(lastDelay));
    item('figures', statsAt === 0 ? '–' : ((now() - statsAt) / 1000).toFixed(1) + ' s old').id = 'age';
  }

  function field(dl, name, value, title) {
    var dt = el('dt', null, name);
    var dd = el('dd', null, value);
    dd.dataset.field = name;
    if (title) dd.title = title;
    dl.appendChild(dt);
    dl.appendChild(dd);
  }

  function instanceCard(i) {
    var flash = (flashUntil[i.id] || 0) > now();
    var card = el('div', 'inst ' + i.state + (i.overloaded ? ' overloaded' : '') + (flash ? ' flash' : ''));
    card.dataset.instance = i.id;
    card.dataset.state = i.state;
    card.dataset.flows = i.flows === null ? '' : String(i.flows);
    var head = el('div', 'head');
    head.appendChild(el('b', null, i.id));
    head.appendChild(el('span', 'sec', i.secondary ? 'secondary ' + i.secondary : 'no secondary'));
    head.appendChild(el('span', 'badge ' + i.state, i.state));
    card.appendChild(head);
    var bar = el('div', 'bar');
    var fill = el('i');
    fill.style.width = Math.min(100, Math.max(0, (i.load || 0) * 100)) + '%';
    bar.appendChild(fill);
    bar.title = 'load ' + num(i.load, 2) + ' (1 = capacity)';
    card.appendChild(bar);
    var dl = el('dl');
    field(dl, 'load', num(i.load, 2) + (i.busy === null ? '' : ' (busiest thread ' + Math.round(i.busy * 100) + '%)'));
    field(dl, 'flows', num(i.flows));
    field(dl, 'packets/s', num(i.pps));
    field(dl, 'queue', num(i.queue), 'packets received, not yet processed');
    var m = i.metrics;
    if (m) {
      field(dl, 'replication lag', ms(m.replication_lag_ms),
        'mean time from a replication send to a peer acknowledging it, over the last ' + statsMs + ' ms (' + m.replication_acks + ' acks)');
      field(dl, 'replication', m.replication_bytes_per_s === null ? '–' : bytes(m.replication_bytes_per_s) + '/s');
      field(dl, 'replicas', num(m.replicas), 'flows held as replicas of cluster peers');
      field(dl, 'replay log', bytes(m.replay_log_bytes) + ' (' + m.replay_log_flows + ' flows)', 'copies kept for a failover');
      var s = m.strong;
      field(dl, 'global state', s === null ? 'n/a' : s.health + ': ' + s.claims + ' claims, ' + s.pending + ' pending, ' +
        s.conflicts + ' conflicts, ' + s.failed + ' failed');
    } else {
      field(dl, 'metrics', i.metrics_error === null ? '…' : 'unavailable: ' + i.metrics_error);
    }
    card.appendChild(dl);
    return card;
  }

  function renderClusters() {
    var frag = document.createDocumentFragment();
    clusters.forEach(function (c) {
      var card = el('section', 'cluster');
      card.dataset.cluster = c.id === null ? '' : c.id;
      var h = el('h2', null, c.id === null ? 'no cluster' : 'cluster ' + c.id);
      h.appendChild(el('small', null, c.instances.length + (c.instances.length === 1 ? ' instance' : ' instances')));
      card.appendChild(h);
      var members = el('div', 'members');
      c.instances.forEach(function (i) { members.appendChild(instanceCard(i)); });
      card.appendChild(members);
      frag.appendChild(card);
    });
    $('clusters').replaceChildren(frag);
    renderTotals();
  }

  function removeInstance(id) {
    clusters.forEach(function (c) { c.instances = c.instances.filter(function (i) { return i.id !== id; }); });
    clusters = clusters.filter(function (c) { return c.instances.length > 0; });
  }

  function putInstance(row) {
    removeInstance(row.id);
    var c = clusters.find(function (x) { return x.id === row.cluster; });
    if (!c) { c = { id: row.cluster, instances: [] }; clusters.push(c); }
    c.instances.push(row);
  }

  function setState(id, state) {
    instances().forEach(function (i) { if (i.id === id) i.state = state; });
  }

  function flash(ids) {
    var until = now() + 1000;
    ids.forEach(function (id) { if (id) flashUntil[id] = until; });
  }

  function plural(n, what) { return n + ' ' + what + (n === 1 ? '' : 's'); }

  /** Two lines in one cell: a headline, and under it a detail in small monospace. */
  function twoLines(top, below) {
    var f = document.createDocumentFragment();
    f.appendChild(el('div', null, top));
    f.appendChild(el('div', 'flow', below));
    return f;
  }

  /**
   * A row of the feed. A live one (arrived: when its event did) times how long after the controller recorded
   * the event it arrived, and it was shown: the next animation frame after the row went in.
   */
  function addRow(kind, d, arrived) {
    var live = arrived !== undefined;
    var tr = el('tr', live ? 'fresh' : 'history');
    tr.dataset.kind = kind;
    var cells;
    if (kind === 'move') {
      tr.dataset.flow = d.flow;
      tr.dataset.from = d.from;
      tr.dataset.to = d.to;
      if (d.aborted) tr.classList.add('aborted');
      var detail = d.aborted ? 'aborted: ' + (d.error || '') :
        (d.buffered > 0 ? plural(d.buffered, 'packet') + ' parked, ' : '') + d.guarantee +
        (d.group > 1 ? ', one of ' + d.group + ' flows' : '');
      cells = [time(d.at), 'move · ' + (d.intra ? 'intra' : 'inter'), twoLines(d.from + ' → ' + d.to, d.flow),
        ms(d.duration_ms), bytes(d.state_bytes), detail];
    } else if (kind === 'failover') {
      tr.dataset.id = d.id;
      if (d.error) tr.classList.add('aborted');
      cells = [time(d.at), 'failover', d.id + ' → ' + (d.successor || 'nobody'), ms(d.recover_ms), '',
        (d.error ? d.error + '; ' : '') + 'detected in ' + ms(d.detect_ms) + ', ' + plural(d.flows, 'flow') + ' (' +
        d.with_state + ' with state, ' + plural(d.replayed, 'packet') + ' replayed, ' + plural(d.gaps, 'gap') +
        '), takeover ' + ms(d.takeover_ms)];
    } else {
      tr.dataset.id = d.id;
      tr.dataset.change = d.change;
      if (d.change === 'failed') tr.classList.add('aborted');
      cells = [time(d.at), d.change, d.id + (d.instance && d.instance.cluster ? ' (cluster ' + d.instance.cluster + ')' : ''),
        '', '', ''];
    }
    cells.forEach(function (cell, n) {
      var td = el('td', n === 3 || n === 4 ? 'num' : n < 3 ? 'nowrap' : null, typeof cell === 'string' ? cell : null);
      if (typeof cell !== 'string') td.appendChild(cell);
      tr.appendChild(td);
    });
    var shown = el('td', 'num', live ? '…' : '');
    tr.appendChild(shown);
    var body = $('events');
    body.insertBefore(tr, body.firstChild);
    while (body.childElementCount > MAX_ROWS) body.removeChild(body.lastChild);
    if (live) {
      tr.dataset.arrivedMs = (arrived - d.at).toFixed(2);
      requestAnimationFrame(function () {
        var delay = now() - d.at;
        tr.dataset.delayMs = delay.toFixed(2);
        shown.textContent = ms(delay);
        lastDelay = delay;
        renderTotals();
      });
    }
  }

  /** A live event: counted, drawn into the clusters at once, and added to the feed. */
  function apply(kind, d) {
    var arrived = now();
    if (kind === 'move') {
      if (!d.aborted) counts.move++;
      flash([d.from, d.to]);
    } else if (kind === 'failover') {
      counts.failover++;
      removeInstance(d.id);
      flash([d.successor]);
    } else if (d.change === 'left') {
      removeInstance(d.id);
    } else if (d.change === 'failed') {
      setState(d.id, 'failed');
    } else if (d.instance) {
      putInstance(d.instance);
      flash([d.id]);
    }
    addRow(kind, d, arrived);
    renderClusters();
  }

  function connect() {
    source = new EventSource('/dashboard/events');
    source.onopen = function () { $('conn').textContent = 'live'; $('conn').className = 'badge live'; };
    source.onerror = function () { $('conn').textContent = 'reconnecting…'; $('conn').className = 'badge down'; };
    source.addEventListener('snapshot', function (e) {
      var s = JSON.parse(e.data);
      statsMs = s.stats_ms;
      clusters = s.clusters;
      counts = { move: s.moves, failover: s.failovers };
      $('events').replaceChildren();
      s.events.forEach(function (x) { addRow(x.event, x.data); });
      renderClusters();
    });
    source.addEventListener('stats', function (e) {
      var s = JSON.parse(e.data);
      clusters = s.clusters;
      statsAt = now();
      $('conn').textContent = 'live';
      $('conn').className = 'badge live';
      renderClusters();
    });
    ['move', 'failover', 'instance'].forEach(function (kind) {
      source.addEventListener(kind, function (e) { apply(kind, JSON.parse(e.data)); });
    });
  }

  setInterval(function () {
    var age = $('age');
    if (age && statsAt > 0) age.textContent = ((now() - statsAt) / 1000).toFixed(1) + ' s old';
    if (statsAt > 0 && now() - statsAt > 4 * statsMs && source && source.readyState === 1) {
      $('conn').textContent = 'stale';
      $('conn').className = 'badge stale';
    }
  }, 250);
  connect();
})();
</script>
</body>
</html>
`;
