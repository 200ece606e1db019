// qkscope report.html: overview, heatmap of the faithfulness choice, head view (PCA from the
// report, UMAP on demand with umap-js), hover and attention lines. No network: everything the
// page needs is in the #qk-data block.
(function () {
  'use strict';
  const errors = [];
  window.addEventListener('error', (e) => errors.push(String(e.message)));
  const D = JSON.parse(document.getElementById('qk-data').textContent);
  const N = D.tokens.seq.length, C = D.scales;
  const QCOL = '#d95f02', KCOL = '#1b9e77';

  // ---- decoding ----
  function bytes(b64) {
    const s = atob(b64), u = new Uint8Array(s.length);
    for (let i = 0; i < s.length; ++i) u[i] = s.charCodeAt(i);
    return u;
  }
  function u16(b64) { const b = bytes(b64); return new Uint16Array(b.buffer, 0, b.length >> 1); }
  function half(h) {
    const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
    if (e === 0) return s * m * Math.pow(2, -24);
    if (e === 31) return m ? NaN : s * Infinity;
    return s * (1 + m / 1024) * Math.pow(2, e - 15);
  }
  const cache = new Map();
  // {q, k}: Float32Array [N * dim]; ok[i] = 0 for a token left out of this head (NaN/Inf in its
  // q or k; the capture left it out of the head's picture and faithfulness).
  function vectors(hi) {
    if (cache.has(hi)) return cache.get(hi);
    const H = D.heads[hi], raw = u16(H.qk), n = N * H.dim;
    const q = new Float32Array(n), k = new Float32Array(n), ok = new Uint8Array(N).fill(1);
    for (let i = 0; i < n; ++i) { q[i] = half(raw[i]); k[i] = half(raw[n + i]); }
    H.nonfinite.forEach((i) => { ok[i] = 0; });
    const v = { q, k, ok };
    cache.set(hi, v);
    return v;
  }
  function pca(hi, ci) {  // Float32Array [2N, 2]: queries then keys
    const P = D.heads[hi].pca[ci], g = u16(P.xy), out = new Float32Array(g.length);
    for (let i = 0; i < g.length; ++i) {
      const a = i & 1;
      out[i] = P.lo[a] + (g[i] / 65535) * (P.hi[a] - P.lo[a]);
    }
    D.heads[hi].nonfinite.forEach((i) => { out[2 * i] = out[2 * i + 1] = out[2 * (N + i)] = out[2 * (N + i) + 1] = NaN; });
    return out;
  }
  const umapCache = new Map(), umapTimes = new Map();
  function picture(hi, ci, proj) { return proj === 'umap' ? umapCache.get(hi + ':' + ci) : pca(hi, ci); }

  // ---- pair scope and attention ----
  function keysInScope(i, ok) {
    const out = [];
    for (let j = 0; j < N; ++j) {
      if (!ok[j]) continue;
      if (D.pairs !== 'all' && D.tokens.seq[j] !== D.tokens.seq[i]) continue;
      if (D.pairs === 'causal' && D.tokens.pos[j] > D.tokens.pos[i]) continue;
      out.push(j);
    }
    return out;
  }
  // Softmax of prescale * q.k over the query's keys in scope; the top `count` as [j, weight].
  function attended(hi, i, count) {
    const H = D.heads[hi], v = vectors(hi), dim = H.dim, keys = keysInScope(i, v.ok);
    const s = keys.map((j) => {
      let d = 0;
      for (let a = 0; a < dim; ++a) d += v.q[i * dim + a] * v.k[j * dim + a];
      return H.prescale * d;
    });
    const m = Math.max(...s);
    let z = 0;
    const w = s.map((x) => { const e = Math.exp(x - m); z += e; return e; });
    return keys.map((j, a) => [j, w[a] / z]).sort((x, y) => y[1] - x[1] || x[0] - y[0]).slice(0, count);
  }
  // faithfulness_2d of a picture, as SPEC 4 (ties to the smaller index).
  function faithfulness2d(hi, xy) {
    const H = D.heads[hi], v = vectors(hi), dim = H.dim, k = D.k;
    let sum = 0, count = 0;
    for (let i = 0; i < N; ++i) {
      if (!v.ok[i]) continue;
      const keys = keysInScope(i, v.ok);
      if (keys.length < k) continue;
      const dots = keys.map((j) => {
        let d = 0;
        for (let a = 0; a < dim; ++a) d += v.q[i * dim + a] * v.k[j * dim + a];
        return [-d, j];
      }).sort((x, y) => x[0] - y[0] || x[1] - y[1]).slice(0, k).map((x) => x[1]);
      const near = keys.map((j) => {
        const dx = xy[2 * i] - xy[2 * (N + j)], dy = xy[2 * i + 1] - xy[2 * (N + j) + 1];
        return [dx * dx + dy * dy, j];
      }).sort((x, y) => x[0] - y[0] || x[1] - y[1]).slice(0, k).map((x) => x[1]);
      sum += near.filter((j) => dots.includes(j)).length / k;
      ++count;
    }
    return count ? sum / count : null;
  }

  // ---- UMAP (umap-js, cosine, seeded) ----
  function mulberry32(a) {
    return function () {
      a |= 0; a = (a + 0x6d2b79f5) | 0;
      let t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }
  function cosine(x, y) {
    let d = 0, nx = 0, ny = 0;
    for (let a = 0; a < x.length; ++a) { d += x[a] * y[a]; nx += x[a] * x[a]; ny += y[a] * y[a]; }
    return nx === 0 || ny === 0 ? 1 : 1 - d / Math.sqrt(nx * ny);
  }
  // c q_i, then k_j / c + t (the keys on the queries' centroid), over the head's kept tokens.
  function jointVectors(hi, ci) {
    const H = D.heads[hi], v = vectors(hi), dim = H.dim, c = C[ci];
    const kept = [];
    for (let i = 0; i < N; ++i) if (v.ok[i]) kept.push(i);
    const t = new Float64Array(dim);
    for (const i of kept)
      for (let a = 0; a < dim; ++a) t[a] += (c * v.q[i * dim + a] - v.k[i * dim + a] / c) / kept.length;
    const rows = [];
    for (const i of kept) rows.push(Array.from({ length: dim }, (_, a) => c * v.q[i * dim + a]));
    for (const j of kept) rows.push(Array.from({ length: dim }, (_, a) => v.k[j * dim + a] / c + t[a]));
    return { rows, kept };
  }
  function umap(hi, ci) {
    const key = hi + ':' + ci;
    if (umapCache.has(key)) return umapCache.get(key);
    const H = D.heads[hi];
    const u = new UMAP.UMAP({ nComponents: 2, nNeighbors: 15, minDist: 0.1, nEpochs: 200,
      distanceFn: cosine, random: mulberry32((D.seed * 7919 + H.layer * 1009 + H.head * 31 + ci) | 0) });
    u.makeSearchGraph = () => null;  // only umap-js's transform() uses it: skip its cost
    // fit() as its two halves, timed: neighbours (NN-descent, fuzzy graph), then the epochs.
    const J = jointVectors(hi, ci), m = J.kept.length, t0 = performance.now(), epochs = u.initializeFit(J.rows);
    const t1 = performance.now();
    for (let e = 0; e < epochs; ++e) u.step();
    umapTimes.set(key, { neighbours_ms: t1 - t0, epochs_ms: performance.now() - t1, points: 2 * m });
    const emb = u.getEmbedding(), xy = new Float32Array(4 * N).fill(NaN);
    J.kept.forEach((i, r) => {
      xy[2 * i] = emb[r][0]; xy[2 * i + 1] = emb[r][1];
      xy[2 * (N + i)] = emb[m + r][0]; xy[2 * (N + i) + 1] = emb[m + r][1];
    });
    umapCache.set(key, xy);
    return xy;
  }

  // ---- drawing ----
  function draw(canvas, xy, opts) {
    const ctx = canvas.getContext('2d'), w = canvas.width, h = canvas.height, r = opts.radius || 1.5;
    ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, w, h);
    if (!xy) { ctx.fillStyle = '#999'; ctx.fillText('not computed', 8, h / 2); return null; }
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < xy.length; i += 2) {
      if (Number.isNaN(xy[i])) continue;  // a token left out of this head
      x0 = Math.min(x0, xy[i]); x1 = Math.max(x1, xy[i]); y0 = Math.min(y0, xy[i + 1]); y1 = Math.max(y1, xy[i + 1]);
    }
    const m = 6, s = Math.min((w - 2 * m) / (x1 - x0 || 1), (h - 2 * m) / (y1 - y0 || 1));
    const ox = (w - s * (x1 - x0)) / 2, oy = (h - s * (y1 - y0)) / 2;
    const T = { x: (x) => ox + (x - x0) * s, y: (y) => h - (oy + (y - y0) * s), xy };
    ctx.globalAlpha = opts.alpha || 0.6;
    for (let pass = 1; pass >= 0; --pass) {  // keys first, queries on top
      ctx.fillStyle = pass ? KCOL : QCOL;
      for (let i = 0; i < N; ++i) {
        const p = 2 * (pass * N + i);
        if (Number.isNaN(xy[p])) continue;
        ctx.fillRect(T.x(xy[p]) - r, T.y(xy[p + 1]) - r, 2 * r, 2 * r);
      }
    }
    ctx.globalAlpha = 1;
    return T;
  }
  function nearestGrid(c) {
    if (c == null) return -1;
    let best = 0;
    C.forEach((x, i) => { if (Math.abs(Math.log(x / c)) < Math.abs(Math.log(C[best] / c))) best = i; });
    return best;
  }
  const METRICS = [['c_wcorr', 'wcorr', 'b-wcorr'], ['c_wcorr_scaled', 'scaled', 'b-scaled'],
    ['c_norm', 'norm\u2248', 'b-norm'], ['c_faithfulness_2d', 'faith2d', 'b-faith']];
  function badges(H, ci) {
    return METRICS.filter((m) => nearestGrid(H[m[0]]) === ci && (m[0] === 'c_norm' || H[m[0]] != null))
      .map((m) => `<span class="badge ${m[2]}">${m[1]}</span>`).join('');
  }
  const fmt = (v, d = 3) => (v == null ? '\u2013' : Number(v).toFixed(d));
  const esc = (s) => String(s).replace(/[&<>"]/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[ch]));

  // ---- heatmap of the faithfulness choice ----
  function faithHeatmap() {
    const layers = [...new Set(D.heads.map((h) => h.layer))], cols = Math.max(...D.heads.map((h) => h.head)) + 1;
    const cell = 22, lo = Math.log(Math.min(...C)), hi = Math.log(Math.max(...C)), span = Math.max(-lo, hi) || 1;
    let s = `<svg xmlns="http://www.w3.org/2000/svg" width="${70 + cols * cell + 20}" height="${50 + layers.length * cell + 10}">`;
    s += `<text x="70" y="20" font-size="13">c maximising faithfulness_2d (PCA, k = ${D.k})</text>`;
    D.heads.forEach((H, hi2) => {
      const r = layers.indexOf(H.layer), x = 70 + H.head * cell, y = 40 + r * cell;
      if (H.c_faithfulness_2d == null) {
        s += `<rect x="${x}" y="${y}" width="${cell}" height="${cell}" fill="#eee" stroke="#bbb"><title>layer ${H.layer} head ${H.head}: no value</title></rect>`;
        return;
      }
      const t = Math.max(-1, Math.min(1, Math.log(H.c_faithfulness_2d) / span)), a = Math.abs(t);
      const end = t < 0 ? [33, 102, 172] : [178, 24, 43], col = [247, 247, 247].map((w, i) => Math.round(w + (end[i] - w) * a));
      s += `<rect data-head="${hi2}" x="${x}" y="${y}" width="${cell}" height="${cell}" fill="rgb(${col})" stroke="#fff"><title>layer ${H.layer} head ${H.head}: c = ${H.c_faithfulness_2d}, faithfulness_2d = ${fmt(H.faithfulness_2d[C.indexOf(H.c_faithfulness_2d)])}</title></rect>`;
    });
    layers.forEach((l, r) => { s += `<text x="60" y="${40 + r * cell + 15}" font-size="11" text-anchor="end">layer ${l}</text>`; });
    document.getElementById('faithfulness-heatmap').innerHTML = s + '</svg>';
  }

  // ---- overview ----
  let overviewMetric = 'c_wcorr';
  function chosenIndex(H, metric) {
    const i = nearestGrid(H[metric]);
    return i < 0 ? C.indexOf(1) >= 0 ? C.indexOf(1) : 0 : i;
  }
  function overview() {
    const ctl = document.getElementById('overview-controls');
    ctl.innerHTML = 'thumbnails at the c chosen by <select id="ov-metric">' +
      METRICS.map((m) => `<option value="${m[0]}"${m[0] === overviewMetric ? ' selected' : ''}>${m[0]}</option>`).join('') +
      `</select> (PCA; <span class="q">queries</span>, <span class="k">keys</span>; click a head). Sample: ${D.sample.tokens} tokens in ${D.sample.sequences} sequences.`;
    document.getElementById('ov-metric').onchange = (e) => { overviewMetric = e.target.value; overview(); };
    const grid = document.getElementById('overview-grid');
    const layers = [...new Set(D.heads.map((h) => h.layer))], cols = Math.max(...D.heads.map((h) => h.head)) + 1;
    grid.style.gridTemplateColumns = `60px repeat(${cols}, 100px)`;
    grid.innerHTML = '';
    layers.forEach((l) => {
      const label = document.createElement('div');
      label.className = 'row-label'; label.textContent = 'layer ' + l;
      grid.appendChild(label);
      for (let h = 0; h < cols; ++h) {
        const hi = D.heads.findIndex((H) => H.layer === l && H.head === h), div = document.createElement('div');
        div.className = 'cell';
        if (hi >= 0) {
          const H = D.heads[hi], ci = chosenIndex(H, overviewMetric), cv = document.createElement('canvas');
          cv.width = 96; cv.height = 96;
          draw(cv, pca(hi, ci), { radius: 1 });
          div.appendChild(cv);
          div.appendChild(document.createTextNode(`H${h} c=${C[ci]} f2d=${fmt(H.faithfulness_2d[ci], 2)}`));
          div.onclick = () => headView(hi);
          div.dataset.head = hi;
        }
        grid.appendChild(div);
      }
    });
  }

  // ---- head view ----
  const view = { hi: -1, ci: 0, proj: 'pca', T: null, query: -1 };
  function context(i) {
    const s = D.tokens.seq[i], out = [];
    for (let j = Math.max(0, i - 4); j <= Math.min(N - 1, i + 4); ++j)
      if (D.tokens.seq[j] === s) out.push(j === i ? `<b>${esc(D.tokens.text[j])}</b>` : esc(D.tokens.text[j]));
    return out.join(' ');
  }
  function headView(hi) {
    view.hi = hi; view.query = -1;
    const H = D.heads[hi], sec = document.getElementById('head-view');
    view.ci = chosenIndex(H, 'c_wcorr');
    sec.hidden = false;
    let rows = '';
    C.forEach((c, ci) => {
      const u = umapCache.get(hi + ':' + ci);
      rows += `<tr><td>${c}</td><td>${fmt(H.wcorr ? H.wcorr[ci] : null)}</td><td>${fmt(H.faithfulness_d[ci])}</td>` +
        `<td class="f2d" data-ci="${ci}">${fmt(H.faithfulness_2d[ci])}</td><td id="f2u-${ci}">${u ? fmt(faithfulness2d(hi, u)) : '\u2013'}</td><td>${badges(H, ci)}</td></tr>`;
    });
    sec.innerHTML = `<h2>Layer ${H.layer} head ${H.head} <small>${esc(H.module)} (prescale ${fmt(H.prescale, 4)}, D = ${H.dim})</small></h2>` +
      `<p>c_wcorr ${fmt(H.c_wcorr, 4)} \u00b7 c_wcorr_scaled ${fmt(H.c_wcorr_scaled, 4)} \u00b7 c_norm ${fmt(H.c_norm, 4)} \u00b7 c_faithfulness_2d ${fmt(H.c_faithfulness_2d, 4)}. ` +
      `Queries c\u00b7q, keys k/c translated onto the queries' centroid. faithfulness (k = ${D.k}, ${H.queries} queries): share of each query's ${D.k} most attended keys among its ${D.k} nearest; faithfulness_d is the ceiling at that c.` +
      (H.nonfinite.length ? ` ${H.nonfinite.length} sample tokens with NaN/Inf in this head's q or k are left out.` : '') + '</p>' +
      `<div><button id="proj-pca">PCA</button><button id="proj-umap">UMAP (cosine)</button><button id="umap-all">UMAP every c</button><span id="umap-status"></span></div>` +
      `<div class="multiples" id="multiples"></div>` +
      `<div class="large"><canvas id="large" width="560" height="560"></canvas><div><table class="metrics"><tr><th>c</th><th>wcorr</th><th>faithfulness_d</th><th>faithfulness_2d PCA</th><th>faithfulness_2d UMAP</th><th>chosen by</th></tr>${rows}</table>` +
      `<div class="legend"><span class="q">\u25a0 queries</span><span class="k">\u25a0 keys</span></div><div id="attended">Hover a point for its token; click a query for its most attended keys.</div></div></div>`;
    document.getElementById('proj-pca').onclick = () => { view.proj = 'pca'; drawHead(); };
    document.getElementById('proj-umap').onclick = () => { view.proj = 'umap'; runUmap([view.ci]); };
    document.getElementById('umap-all').onclick = () => { view.proj = 'umap'; runUmap(C.map((_, i) => i)); };
    const large = document.getElementById('large');
    large.onmousemove = (e) => hover(e);
    large.onmouseleave = () => { document.getElementById('tooltip').hidden = true; };
    large.onclick = (e) => clickQuery(e);
    drawHead();
    sec.scrollIntoView && location.hash.indexOf('test') < 0 && sec.scrollIntoView();
  }
  function runUmap(list) {
    const status = document.getElementById('umap-status'), todo = list.slice();
    const step = () => {
      if (!todo.length) { status.textContent = ''; drawHead(); return; }
      const ci = todo.shift();
      status.textContent = ` computing UMAP at c = ${C[ci]}\u2026`;
      setTimeout(() => {
        const t = performance.now(), xy = umap(view.hi, ci);
        const cell = document.getElementById('f2u-' + ci);
        if (cell) cell.textContent = fmt(faithfulness2d(view.hi, xy));
        status.textContent = ` UMAP c = ${C[ci]}: ${((performance.now() - t) / 1000).toFixed(2)} s`;
        drawHead();
        setTimeout(step, 0);
      }, 0);
    };
    step();
  }
  function drawHead() {
    const H = D.heads[view.hi], box = document.getElementById('multiples');
    box.innerHTML = '';
    C.forEach((c, ci) => {
      const div = document.createElement('div'), cv = document.createElement('canvas');
      div.className = 'multiple' + (ci === view.ci ? ' selected' : '');
      cv.width = 150; cv.height = 150;
      draw(cv, picture(view.hi, ci, view.proj), { radius: 1 });
      div.appendChild(cv);
      const label = document.createElement('div');
      label.innerHTML = `c = ${c} ${badges(H, ci)}`;
      div.appendChild(label);
      div.onclick = () => { view.ci = ci; view.query = -1; drawHead(); };
      box.appendChild(div);
    });
    view.T = draw(document.getElementById('large'), picture(view.hi, view.ci, view.proj), { radius: 2.2, alpha: 0.55 });
    if (view.query >= 0) drawLines();
  }
  function pick(e) {
    if (!view.T) return -1;
    const rect = e.target.getBoundingClientRect(), mx = e.clientX - rect.left, my = e.clientY - rect.top, xy = view.T.xy;
    let best = -1, bd = 64;
    for (let r = 0; r < 2 * N; ++r) {
      const dx = view.T.x(xy[2 * r]) - mx, dy = view.T.y(xy[2 * r + 1]) - my, d = dx * dx + dy * dy;
      if (d < bd) { bd = d; best = r; }
    }
    return best;
  }
  function hover(e) {
    const r = pick(e), tip = document.getElementById('tooltip');
    if (r < 0) { tip.hidden = true; return; }
    const i = r % N;
    tip.innerHTML = `<b class="${r < N ? 'q' : 'k'}">${r < N ? 'query' : 'key'}</b> ${esc(D.tokens.text[i])} \u00b7 sequence ${D.tokens.seq[i]}, position ${D.tokens.pos[i]}<br>${context(i)}`;
    tip.style.left = e.clientX + 12 + 'px'; tip.style.top = e.clientY + 12 + 'px';
    tip.hidden = false;
  }
  function clickQuery(e) {
    const r = pick(e);
    view.query = r >= 0 && r < N ? r : -1;
    drawHead();
  }
  function drawLines() {
    const i = view.query, top = attended(view.hi, i, D.k), ctx = document.getElementById('large').getContext('2d'), xy = view.T.xy;
    ctx.strokeStyle = '#000';
    top.forEach(([j, w]) => {
      ctx.globalAlpha = Math.max(0.2, Math.min(1, w * 2)); ctx.lineWidth = 1 + 3 * w;
      ctx.beginPath(); ctx.moveTo(view.T.x(xy[2 * i]), view.T.y(xy[2 * i + 1]));
      ctx.lineTo(view.T.x(xy[2 * (N + j)]), view.T.y(xy[2 * (N + j) + 1])); ctx.stroke();
    });
    ctx.globalAlpha = 1;
    document.getElementById('attended').innerHTML = `Query <b>${esc(D.tokens.text[i])}</b> (sequence ${D.tokens.seq[i]}, position ${D.tokens.pos[i]}) attends most to:<br>` +
      top.map(([j, w]) => `${esc(D.tokens.text[j])} (position ${D.tokens.pos[j]}): ${(100 * w).toFixed(1)}%`).join('<br>');
  }

  // ---- start ----
  faithHeatmap();
  const t0 = performance.now();
  overview();
  const overviewMs = performance.now() - t0;
  window.qkscope = { data: D, pca, umap, vectors, faithfulness2d, attended, headView };

  // Link to a head: #head=H[&query=I] opens head H (index into the heads) scrolled into view,
  // with the attention lines of sample token I's query.
  const link = /head=(\d+)(?:&query=(\d+))?/.exec(location.hash);
  if (link && Number(link[1]) < D.heads.length) {
    headView(Number(link[1]));
    if (link[2] && Number(link[2]) < N && vectors(view.hi).ok[Number(link[2])]) { view.query = Number(link[2]); drawHead(); }
  }

  // Test hook: #test=H[&umap=1] opens head H and writes what a headless test reads into #qk-test.
  const m = /test=(\d+)(&umap=1)?/.exec(location.hash);
  if (m) {
    const hi = Number(m[1]), t1 = performance.now();
    headView(hi);
    const headMs = performance.now() - t1, out = { overview_ms: overviewMs, head_ms: headMs, head: hi };
    const large = document.getElementById('large').getContext('2d').getImageData(0, 0, 560, 560).data;
    let drawn = 0;
    for (let p = 0; p < large.length; p += 4) drawn += large[p] !== 255 || large[p + 1] !== 255 || large[p + 2] !== 255;
    out.drawn_pixels = drawn;
    out.overview_cells = document.querySelectorAll('#overview-grid canvas').length;
    out.pca = C.map((_, ci) => Array.from(pca(hi, ci)));
    out.faithfulness_2d = D.heads[hi].faithfulness_2d;
    out.faithfulness_2d_page = C.map((_, ci) => faithfulness2d(hi, pca(hi, ci)));
    out.faithfulness_d = D.heads[hi].faithfulness_d;
    out.tokens = N;
    if (m[2]) {
      const t2 = performance.now(), xy = umap(hi, view.ci);
      out.umap_ms = performance.now() - t2;
      Object.assign(out, { umap: umapTimes.get(hi + ':' + view.ci) });
      out.umap_faithfulness_2d = faithfulness2d(hi, xy);
      out.umap_again_equal = Array.from(xy).join() === Array.from((umapCache.delete(hi + ':' + view.ci), umap(hi, view.ci))).join();
    }
    out.resources = performance.getEntriesByType('resource').length;
    out.errors = errors;
    const pre = document.createElement('pre');
    pre.id = 'qk-test';
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
})();
