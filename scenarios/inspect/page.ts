/**
 * The time-travel page: HTML, CSS and script in one string, with the run's data put in place
 * of __DATA__ (see html.ts). Everything it needs is inline: it opens from a file with the
 * network off. The script is plain ES2020 that builds the DOM from the data.
 */
export const PAGE_TEMPLATE = String.raw`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }
  header { padding: 10px 16px; background: #23395d; color: #fff; }
  header h1 { font-size: 18px; margin: 0; }
  header .sub { opacity: .85; font-size: 13px; }
  main { display: grid; grid-template-columns: minmax(320px, 32%) 1fr; gap: 12px; padding: 12px 16px; }
  section h2 { font-size: 14px; margin: 8px 0 4px; text-transform: uppercase; letter-spacing: .04em; color: #555; }
  #narrative, #violations { max-height: 34vh; overflow: auto; background: #fff; border: 1px solid #ddd; padding: 4px 8px; }
  #narrative div, #violations div { padding: 2px 0; cursor: pointer; }
  #narrative div:hover, #violations div:hover { background: #eef3fb; }
  .t { font-family: ui-monospace, monospace; color: #666; font-size: 12px; margin-right: 6px; }
  .err { color: #b00020; } .warn { color: #a66300; }
  #timeline { width: 100%; height: 96px; background: #fff; border: 1px solid #ddd; display: block; cursor: crosshair; }
  #controls { display: flex; align-items: center; gap: 8px; margin: 6px 0; }
  #slider { flex: 1; }
  #where { font-family: ui-monospace, monospace; font-size: 12px; margin: 4px 0; }
  #vmsg { color: #b00020; font-size: 13px; margin: 2px 0 6px; min-height: 1.2em; }
  #sections label { margin-right: 8px; font-size: 12px; }
  #state { background: #fff; border: 1px solid #ddd; padding: 6px 8px; overflow: auto; max-height: 62vh; }
  #state pre { margin: 0 0 8px; font: 12px/1.35 ui-monospace, monospace; white-space: pre-wrap; }
  #state .stale { background: #ffe3e3; color: #8a0015; font-weight: 600; }
  .keys { font-size: 12px; color: #666; }
  button { font-size: 12px; }
</style>
</head>
<body>
<header><h1 id="title"></h1><div class="sub" id="subtitle"></div><div class="sub" id="outcome"></div></header>
<main>
  <div>
    <section><h2>Narrative</h2><div id="narrative"></div></section>
    <section><h2>Violations</h2><div id="violations"></div></section>
  </div>
  <div>
    <section>
      <h2>Timeline</h2>
      <svg id="timeline" preserveAspectRatio="none"></svg>
      <div id="controls">
        <button id="prevv" title="previous violation ([ or p)">&#9664; violation</button>
        <input id="slider" type="range" min="0" max="0" value="0" step="1" aria-label="instant">
        <button id="nextv" title="next violation (] or n)">violation &#9654;</button>
      </div>
      <div class="keys">Keys: <b>]</b>/<b>n</b> next violation, <b>[</b>/<b>p</b> previous, <b>&larr;</b>/<b>&rarr;</b> step, <b>Home</b>/<b>End</b>. Click the timeline or a narrative line to jump.</div>
      <div id="where"></div>
      <div id="vmsg"></div>
    </section>
    <section><h2>State at this instant</h2><div id="sections"></div><div id="state"></div></section>
  </div>
</main>
<script type="application/json" id="data">__DATA__</script>
<script>
(function () {
  'use strict';
  var D = JSON.parse(document.getElementById('data').textContent);
  var $ = function (id) { return document.getElementById(id); };
  function fmt(ns) {
    if (ns < 1e3) return ns + ' ns';
    if (ns < 1e6) return (ns / 1e3).toFixed(3) + ' \u00b5s';
    if (ns < 1e9) return (ns / 1e6).toFixed(3) + ' ms';
    return (ns / 1e9).toFixed(6) + ' s';
  }
  function el(tag, cls, text) { var e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; }
  $('title').textContent = D.title;
  $('subtitle').textContent = D.subtitle + '; the run ends at ' + fmt(D.endNs);
  $('outcome').textContent = 'outcome: ' + D.outcome;

  var snaps = D.snaps;
  var slider = $('slider');
  slider.max = String(Math.max(0, snaps.length - 1));
  // Index of the first snapshot at or after time t.
  function indexAt(t) {
    var lo = 0, hi = snaps.length - 1;
    while (lo < hi) { var mid = (lo + hi) >> 1; if (snaps[mid][0] < t) lo = mid + 1; else hi = mid; }
    return lo;
  }
  var violationSnaps = [];
  snaps.forEach(function (s, i) { if (s[2] > 0) violationSnaps.push(i); });

  D.narrative.forEach(function (n) {
    var d = el('div');
    d.appendChild(el('span', 't', fmt(n[0])));
    d.appendChild(document.createTextNode(n[1]));
    d.onclick = function () { go(indexAt(n[0])); };
    $('narrative').appendChild(d);
  });
  if (!D.violations.length) $('violations').textContent = 'none';
  D.violations.forEach(function (v, i) {
    var d = el('div', v.severity === 'error' ? 'err' : 'warn');
    d.appendChild(el('span', 't', fmt(v.t)));
    d.appendChild(document.createTextNode('[' + (i + 1) + '] ' + v.id + ': ' + v.message));
    d.title = v.trail.map(function (e) { return fmt(e[0]) + '  ' + e[1] + ': ' + e[2]; }).join('\n');
    d.onclick = function () { var at = violationSnaps.filter(function (j) { return snaps[j][2] === i + 1; })[0]; go(at !== undefined ? at : indexAt(v.t)); };
    $('violations').appendChild(d);
  });

  // Sections the state panel shows (checkboxes).
  var sectionNames = [];
  D.blocks.forEach(function (b) { if (sectionNames.indexOf(b[0]) < 0) sectionNames.push(b[0]); });
  var shown = {};
  sectionNames.forEach(function (name) {
    shown[name] = name !== 'tasks';
    var l = el('label'); var c = el('input'); c.type = 'checkbox'; c.checked = shown[name];
    c.onchange = function () { shown[name] = c.checked; render(); };
    l.appendChild(c); l.appendChild(document.createTextNode(' ' + name)); $('sections').appendChild(l);
  });

  // The timeline: one row per kind of mark, x by snapshot order (event order), so that
  // bursts a few microseconds apart stay apart; times are in the tooltips and the label.
  var NS = 'http://www.w3.org/2000/svg';
  var svg = $('timeline');
  var W = 1000, ROW = 14, rows = D.kinds.length;
  svg.setAttribute('viewBox', '0 0 ' + W + ' ' + (rows * ROW + 12));
  var colors = { 'invalidate-start': '#3b6fb6', 'invalidate-end': '#7aa6e0', 'cpu-fault': '#5a9e4b', 'device-fault': '#c08a1e', 'sync': '#7b4fb0', 'violation': '#d0021b' };
  var X0 = 72;
  function xOf(i) { return snaps.length > 1 ? X0 + (i / (snaps.length - 1)) * (W - X0 - 5) : W / 2; }
  D.kinds.forEach(function (k, r) {
    var t = document.createElementNS(NS, 'text'); t.setAttribute('x', '2'); t.setAttribute('y', String(r * ROW + 10));
    t.setAttribute('font-size', '8'); t.setAttribute('fill', '#999'); t.textContent = k; svg.appendChild(t);
  });
  D.marks.forEach(function (m) {
    var x = xOf(indexAt(m[0]));
    var line = document.createElementNS(NS, 'rect');
    line.setAttribute('x', String(x)); line.setAttribute('y', String(m[1] * ROW + 2));
    line.setAttribute('width', m[1] === 5 ? '2' : '1'); line.setAttribute('height', String(ROW - 3));
    line.setAttribute('fill', colors[D.kinds[m[1]]] || '#444');
    var tip = document.createElementNS(NS, 'title'); tip.textContent = fmt(m[0]) + ' ' + m[2]; line.appendChild(tip);
    svg.appendChild(line);
  });
  var cursor = document.createElementNS(NS, 'rect');
  cursor.setAttribute('y', '0'); cursor.setAttribute('width', '2'); cursor.setAttribute('height', String(rows * ROW + 12)); cursor.setAttribute('fill', '#000'); cursor.setAttribute('opacity', '.5');
  svg.appendChild(cursor);
  svg.addEventListener('click', function (ev) {
    var box = svg.getBoundingClientRect();
    var x = ((ev.clientX - box.left) / box.width) * W;
    go(Math.round(((x - X0) / (W - X0 - 5)) * (snaps.length - 1)));
  });

  var current = 0;
  function render() {
    var s = snaps[current];
    if (!s) { $('where').textContent = 'no snapshots'; return; }
    slider.value = String(current);
    cursor.setAttribute('x', String(xOf(current) - 1));
    $('where').textContent = 'instant ' + (current + 1) + '/' + snaps.length + ': t = ' + fmt(s[0]) + ' (' + s[0] + ' ns), ' + s[1];
    var v = s[2] > 0 ? D.violations[s[2] - 1] : null;
    $('vmsg').textContent = v ? 'violation ' + s[2] + ' [' + v.severity + '] ' + v.id + ': ' + v.message : '';
    var state = $('state');
    state.textContent = '';
    s[3].forEach(function (bi) {
      var b = D.blocks[bi];
      if (!shown[b[0]]) return;
      var pre = el('pre'); pre.setAttribute('data-section', b[0]);
      for (var r = 0; r < b[1].length; r += 2) {
        for (var li = b[1][r]; li < b[1][r] + b[1][r + 1]; li++) {
          var line = D.lines[li];
          pre.appendChild(el('span', /^ {2}(STALE|DIVERGED)/.test(line) ? 'stale' : '', line + '\n'));
        }
      }
      state.appendChild(pre);
    });
    document.body.setAttribute('data-instant', String(current));
  }
  function go(i) { current = Math.max(0, Math.min(snaps.length - 1, i | 0)); render(); }
  function nextViolation(dir) {
    var list = violationSnaps;
    if (!list.length) return;
    var target = dir > 0 ? list.filter(function (j) { return j > current; })[0] : list.filter(function (j) { return j < current; }).pop();
    if (target !== undefined) go(target);
  }
  slider.addEventListener('input', function () { go(Number(slider.value)); });
  $('nextv').onclick = function () { nextViolation(1); };
  $('prevv').onclick = function () { nextViolation(-1); };
  document.addEventListener('keydown', function (ev) {
    if (ev.target && ev.target.tagName === 'INPUT' && ev.target.type === 'checkbox') return;
    var k = ev.key;
    if (k === ']' || k === 'n') { nextViolation(1); ev.preventDefault(); }
    else if (k === '[' || k === 'p') { nextViolation(-1); ev.preventDefault(); }
    else if (ev.target !== slider && (k === 'ArrowRight' || k === 'ArrowLeft')) { go(current + (k === 'ArrowRight' ? 1 : -1)); ev.preventDefault(); }
    else if (ev.target !== slider && (k === 'Home' || k === 'End')) { go(k === 'Home' ? 0 : snaps.length - 1); ev.preventDefault(); }
  });
  render();
  document.body.setAttribute('data-ready', 'true');
})();
</script>
</body>
</html>
`;
