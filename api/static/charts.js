// Inline SVG plots, drawn at the container's width (redrawn when it changes): best score over
// iterations, the population's score range, the NSGA-II Pareto front, accepted/rejected counts and
// the chosen backbone. Each SVG is role="img" with a <title> and a <desc> saying what it shows.

import { clear, fmtNum, s } from './dom.js';

let uid = 0;
const state = new WeakMap();
const observer = typeof ResizeObserver === 'function'
  ? new ResizeObserver((entries) => {
    for (const e of entries) {
      const st = state.get(e.target);
      const w = Math.round(e.contentRect.width);
      if (st && w > 0 && Math.abs(w - st.width) > 4) st.render();
    }
  })
  : null;

/** Draw ``build(width)`` into ``box`` now and again whenever the box's width changes. */
export function draw(box, build) {
  let st = state.get(box);
  if (!st) {
    st = { width: 0, render: null };
    state.set(box, st);
    if (observer) observer.observe(box);
  }
  st.render = () => {
    st.width = Math.round(box.clientWidth) || 360;
    clear(box).append(build(Math.max(260, st.width)));
  };
  st.render();
}

function frame(width, height, title, desc, cls) {
  const id = `svg${++uid}`;
  return s('svg', {
    class: cls, width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-labelledby': `${id}-t ${id}-d`, focusable: 'false',
  }, s('title', { id: `${id}-t` }, title), s('desc', { id: `${id}-d` }, desc));
}

export function ticks(min, max, count = 5) {
  if (!(max > min)) {
    const d = Math.abs(min) * 0.05 || 1;
    min -= d;
    max += d;
  }
  const raw = (max - min) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((v) => v >= raw);
  const lo = Math.floor(min / step) * step;
  const hi = Math.ceil(max / step) * step;
  const out = [];
  for (let v = lo; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

const lin = (d0, d1, r0, r1) => (v) => (d1 === d0 ? (r0 + r1) / 2 : r0 + ((v - d0) * (r1 - r0)) / (d1 - d0));

function axes(svg, { x, y, xt, yt, m, W, H, xLabel, yLabel, xFmt = fmtNum, yFmt = fmtNum }) {
  const g = s('g', { class: 'axis' });
  for (const v of yt) {
    const py = y(v);
    g.append(s('line', { class: 'gridline', x1: m.l, x2: W - m.r, y1: py, y2: py }));
    g.append(s('text', { class: 'tick', x: m.l - 6, y: py + 4, 'text-anchor': 'end' }, yFmt(v)));
  }
  for (const v of xt) {
    const px = x(v);
    g.append(s('line', { x1: px, x2: px, y1: H - m.b, y2: H - m.b + 4 }));
    g.append(s('text', { class: 'tick', x: px, y: H - m.b + 16, 'text-anchor': 'middle' }, xFmt(v)));
  }
  g.append(s('line', { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }));
  g.append(s('text', { class: 'axis-label', x: (m.l + W - m.r) / 2, y: H - 4, 'text-anchor': 'middle' }, xLabel));
  g.append(s('text', {
    class: 'axis-label', x: 12, y: (m.t + H - m.b) / 2, 'text-anchor': 'middle',
    transform: `rotate(-90 12 ${(m.t + H - m.b) / 2})`,
  }, yLabel));
  svg.append(g);
}

function thin(values, maxCount) {
  if (values.length <= maxCount) return values;
  const k = Math.ceil(values.length / maxCount);
  return values.filter((_, i) => i % k === 0);
}

/** Best score so far against the iteration: a step line. ``points`` = [[iteration, best], ...]. */
export function bestCurve(width, { points, xMax, scoreName }) {
  const H = 240;
  const m = { t: 14, r: 16, b: 40, l: 58 };
  const pts = points.filter((p) => Number.isFinite(p[1]));
  const last = pts[pts.length - 1];
  const desc = last
    ? `Best ${scoreName} score rose from ${fmtNum(pts[0][1])} to ${fmtNum(last[1])} by iteration ${last[0]}.`
    : 'No score yet.';
  const svg = frame(width, H, 'Best score over iterations', desc, 'best-curve');
  if (!pts.length) {
    svg.append(s('text', { x: width / 2, y: H / 2, 'text-anchor': 'middle', class: 'axis-label' }, 'waiting for the first scores…'));
    return svg;
  }
  const x1 = Math.max(xMax || 0, last[0], 1);
  const ys = pts.map((p) => p[1]);
  const yt = ticks(Math.min(...ys), Math.max(...ys), 4);
  const xt = thin(ticks(0, x1, width < 420 ? 3 : 6), width < 420 ? 4 : 8);
  const x = lin(0, xt[xt.length - 1], m.l, width - m.r);
  const y = lin(yt[0], yt[yt.length - 1], H - m.b, m.t);
  axes(svg, { x, y, xt, yt, m, W: width, H, xLabel: 'iteration', yLabel: `best score (${scoreName})` });
  let d = `M${x(pts[0][0]).toFixed(1)},${y(pts[0][1]).toFixed(1)}`;
  for (let i = 1; i < pts.length; i++) d += `H${x(pts[i][0]).toFixed(1)}V${y(pts[i][1]).toFixed(1)}`;
  d += `H${x(x1).toFixed(1)}`;
  svg.append(s('path', { class: 'line', d }));
  svg.append(s('circle', { class: 'dot-hot', cx: x(last[0]), cy: y(last[1]), r: 4.5 }));
  return svg;
}

/** The current population's scores: min–max range, median and mean. */
export function populationRange(width, pop) {
  const H = 136;
  const m = { l: 22, r: 22 };
  if (!pop || pop.max === undefined || pop.max === null) {
    const svg = frame(width, 60, 'Population score distribution', 'No population statistics yet.', 'population');
    svg.append(s('text', { x: width / 2, y: 32, 'text-anchor': 'middle', class: 'axis-label' },
      'no population statistics (yet)'));
    return svg;
  }
  const desc = `Population of ${pop.size}: scores from ${fmtNum(pop.min)} to ${fmtNum(pop.max)}, `
    + `median ${fmtNum(pop.median)}, mean ${fmtNum(pop.mean)}.`;
  const svg = frame(width, H, 'Population score distribution', desc, 'population');
  const xt = ticks(pop.min, pop.max, width < 420 ? 3 : 6);
  const x = lin(xt[0], xt[xt.length - 1], m.l, width - m.r);
  const cy = 54;
  const g = s('g', { class: 'axis' });
  for (const v of xt) {
    g.append(s('line', { class: 'gridline', x1: x(v), x2: x(v), y1: 26, y2: 100 }));
    g.append(s('text', { class: 'tick', x: x(v), y: 114, 'text-anchor': 'middle' }, fmtNum(v)));
  }
  g.append(s('text', { class: 'axis-label', x: width / 2, y: H - 3, 'text-anchor': 'middle' },
    `score of the ${pop.size} members`));
  svg.append(g);
  svg.append(s('rect', {
    class: 'range-box', x: x(pop.min), y: cy - 14, width: Math.max(2, x(pop.max) - x(pop.min)), height: 28, rx: 3,
  }));
  svg.append(s('line', { class: 'median', x1: x(pop.median), x2: x(pop.median), y1: cy - 18, y2: cy + 18 }));
  const mx = x(pop.mean);
  svg.append(s('path', { class: 'mean', d: `M${mx},${cy - 7}L${mx + 7},${cy}L${mx},${cy + 7}L${mx - 7},${cy}Z` }));
  // labels: min/max above the range, median/mean below it, kept inside the plot and apart
  const label = (px, py, text, anchor, cls = 'tick') => s('text', { class: cls, x: px, y: py, 'text-anchor': anchor }, text);
  svg.append(label(x(pop.min), 18, `min ${fmtNum(pop.min)}`, x(pop.min) < width / 2 ? 'start' : 'middle'));
  svg.append(label(x(pop.max), 18, `max ${fmtNum(pop.max)}`, x(pop.max) > width / 2 ? 'end' : 'middle'));
  const mdx = x(pop.median);
  const left = Math.min(mdx, mx);
  const right = Math.max(mdx, mx);
  const apart = right - left > 90;
  const medianFirst = mdx <= mx;
  const below = cy + 30;
  const [lText, rText] = medianFirst
    ? [`median ${fmtNum(pop.median)}`, `mean ${fmtNum(pop.mean)}`]
    : [`mean ${fmtNum(pop.mean)}`, `median ${fmtNum(pop.median)}`];
  if (apart) {
    svg.append(label(left, below, lText, 'middle'));
    svg.append(label(right, below, rText, 'middle'));
  } else {
    const mid = Math.min(Math.max((left + right) / 2, 90), width - 90);
    svg.append(label(mid - 4, below, lText, 'end'));
    svg.append(label(mid + 4, below, rText, 'start'));
  }
  return svg;
}

/** NSGA-II Pareto front: score against FLOPs, the chosen (highest-score) point ringed. */
export function paretoFront(width, { front, budgetFlops }) {
  const H = 260;
  const m = { t: 16, r: 18, b: 40, l: 58 };
  const pts = (front || []).filter((p) => Number.isFinite(p.score) && Number.isFinite(p.flops));
  if (!pts.length) {
    const svg = frame(width, 60, 'Pareto front', 'No Pareto front yet.', 'pareto');
    svg.append(s('text', { x: width / 2, y: 32, 'text-anchor': 'middle', class: 'axis-label' }, 'no front yet'));
    return svg;
  }
  const chosen = pts.reduce((a, b) => (b.score > a.score ? b : a));
  const desc = `${pts.length} non-dominated candidates; chosen #${chosen.number} with score ${fmtNum(chosen.score)} `
    + `at ${fmtNum(chosen.flops)} FLOPs.`;
  const svg = frame(width, H, 'Pareto front: score vs FLOPs', desc, 'pareto');
  const fx = pts.map((p) => p.flops / 1e9);
  if (budgetFlops) fx.push(budgetFlops / 1e9);
  const xt = thin(ticks(Math.min(...fx), Math.max(...fx), width < 420 ? 3 : 6), 7);
  const yt = ticks(Math.min(...pts.map((p) => p.score)), Math.max(...pts.map((p) => p.score)), 4);
  const x = lin(xt[0], xt[xt.length - 1], m.l, width - m.r);
  const y = lin(yt[0], yt[yt.length - 1], H - m.b, m.t);
  axes(svg, { x, y, xt, yt, m, W: width, H, xLabel: 'FLOPs (G)', yLabel: 'score', xFmt: (v) => String(+v.toPrecision(4)) });
  if (budgetFlops) {
    const bx = x(budgetFlops / 1e9);
    svg.append(s('line', { class: 'budget', x1: bx, x2: bx, y1: m.t, y2: H - m.b }));
    svg.append(s('text', { class: 'tick', x: bx - 4, y: m.t + 10, 'text-anchor': 'end' }, 'budget'));
  }
  const sorted = [...pts].sort((a, b) => a.flops - b.flops);
  let d = '';
  sorted.forEach((p, i) => {
    d += `${i ? 'H' : 'M'}${x(p.flops / 1e9).toFixed(1)}${i ? 'V' : ','}${y(p.score).toFixed(1)}`;
  });
  svg.append(s('path', { class: 'line', d, opacity: 0.45 }));
  for (const p of sorted) {
    svg.append(s('circle', { class: 'dot', cx: x(p.flops / 1e9), cy: y(p.score), r: 4 },
      s('title', {}, `#${p.number}: score ${fmtNum(p.score)}, ${fmtNum(p.flops)} FLOPs`)));
  }
  const cx = x(chosen.flops / 1e9);
  const cy = y(chosen.score);
  svg.append(s('circle', { class: 'chosen-ring', cx, cy, r: 9 }));
  svg.append(s('text', { class: 'tick', x: cx + (cx > width / 2 ? -14 : 14), y: cy + 18,
    'text-anchor': cx > width / 2 ? 'end' : 'start' }, `chosen #${chosen.number}`));
  return svg;
}

/** Evaluated / rejected / failed candidates as one stacked bar. */
export function countsBar(width, { evaluated = 0, rejected = 0, failed = 0 }) {
  const total = evaluated + rejected + failed;
  const svg = frame(width, 22, 'Accepted and rejected candidates',
    `${evaluated} evaluated, ${rejected} rejected over budget, ${failed} failed.`, 'counts');
  svg.append(s('rect', { x: 0, y: 2, width, height: 18, rx: 3, fill: '#eef0f3' }));
  let x0 = 0;
  for (const [n, cls] of [[evaluated, 'seg-eval'], [rejected, 'seg-rej'], [failed, 'seg-fail']]) {
    if (!total || !n) continue;
    const w = (width * n) / total;
    svg.append(s('rect', { class: cls, x: x0, y: 2, width: Math.max(1, w), height: 18 }));
    x0 += w;
  }
  return svg;
}

/** The chosen backbone: one bar per block (length ~ log channels, thickness ~ depth), kernel and
 * stride beside it, stages bracketed on the right with the outputs the neck takes (C3–C5) marked.
 * The stages come from the service (Structure.stage_table(): the one place of the stage rule). */
export function backbone(width, { structure, stages: given, height = 480, imgWidth }) {
  const blocks = (structure && structure.blocks) || [];
  const stages = given || [];
  const neck = new Set(stages.slice(-3).map((st) => st.name));
  const narrow = width < 560;
  const L = narrow ? 126 : 220;
  const S = narrow ? 110 : 170;
  const rows = blocks.map((b) => 42 + 3.5 * Math.min(b.layers || 1, 10));
  const gap = 8;
  const top = 6;
  const H = top + rows.reduce((a, b) => a + b, 0) + gap * Math.max(0, blocks.length - 1) + 6;
  const taken = stages.slice(-3);
  const desc = `${blocks.length} blocks in ${stages.length} stages; the detection neck takes `
    + taken.map((st) => `${st.name} (${st.channels} channels, stride ${st.stride}, after block ${st.end})`).join(', ') + '.';
  const svg = frame(width, H, 'Chosen backbone', desc, 'backbone');
  const maxLog = Math.max(...blocks.map((b) => Math.log2(Math.max(b.out, 2))), 1);
  const areaW = Math.max(40, width - L - S - 14);
  const tops = [];
  let y = top;
  rows.forEach((r) => { tops.push(y); y += r + gap; });
  const stageOf = (i) => stages.find((st) => st.start <= i && i <= st.end);
  blocks.forEach((b, i) => {
    const st = stageOf(i);
    const hot = Boolean(st) && neck.has(st.name);
    const isOut = hot && st.end === i;
    const r = rows[i];
    const t = tops[i];
    const kind = b.type.replace('SuperRes', '').replace('BNRELU', '');
    const g = s('g', { class: 'block-row', 'data-block': i });
    g.append(s('text', { class: 'block-name', x: 0, y: t + 14 }, `${i} ${kind}`));
    g.append(s('text', { class: 'block-detail', x: 0, y: t + 28 },
      `k${b.kernel} · s${b.stride} · ×${b.layers || 1}${b.bottleneck ? ` · btn ${b.bottleneck}` : ''}`));
    g.append(s('text', { class: 'block-detail', x: 0, y: t + 41 }, `${b.in}→${b.out} ch`));
    const len = 14 + (areaW - 14) * (Math.log2(Math.max(b.out, 2)) / maxLog);
    g.append(s('rect', {
      class: `block${hot ? ' neck' : ''}${isOut ? ' out' : ''}`, x: L, y: t + 1, width: len, height: r - 2, rx: 4,
    }, s('title', {}, `block ${i}: ${b.type}, ${b.in}→${b.out} channels, kernel ${b.kernel}, stride ${b.stride}, `
      + `${b.layers || 1} layer(s)${b.bottleneck ? `, bottleneck ${b.bottleneck}` : ''}`)));
    svg.append(g);
  });
  const bx = width - S + 2;
  const W = imgWidth || height;
  for (const st of stages) {
    const hot = neck.has(st.name);
    const y0 = tops[st.start] + 2;
    const y1 = tops[st.end] + rows[st.end] - 2;
    svg.append(s('path', { class: `stage-bracket${hot ? ' neck' : ''}`, d: `M${bx},${y0}H${bx + 6}V${y1}H${bx}` }));
    const mid = tops[st.end] + rows[st.end] / 2;
    svg.append(s('text', { class: `stage-label${hot ? ' neck' : ''}`, x: bx + 12, y: mid - 2 },
      `${st.name} /${st.stride} · ${st.channels} ch`));
    svg.append(s('text', { class: `stage-label${hot ? ' neck' : ''}`, x: bx + 12, y: mid + 12 },
      `${Math.floor(height / st.stride)}×${Math.floor(W / st.stride)}${hot ? ' → neck' : ''}`));
  }
  return svg;
}
