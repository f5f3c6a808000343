// DOM building without innerHTML (every value from the API goes in as text), and number formatting.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function fmtNum(x, digits = 4) {
  if (x === null || x === undefined || Number.isNaN(x)) return '–';
  if (typeof x !== 'number') return String(x);
  const a = Math.abs(x);
  if (a >= 1e9) return `${+(x / 1e9).toPrecision(digits)} G`;
  if (a >= 1e6) return `${+(x / 1e6).toPrecision(digits)} M`;
  if (a >= 1e4) return `${+(x / 1e3).toPrecision(digits)} k`;
  if (Number.isInteger(x)) return String(x);
  return String(+x.toPrecision(digits));
}

export function fmtInt(x) {
  return x === null || x === undefined ? '–' : Math.round(x).toLocaleString('en-US');
}

export function fmtDuration(sec) {
  if (sec === null || sec === undefined || !Number.isFinite(sec)) return '–';
  sec = Math.max(0, Math.round(sec));
  if (sec < 60) return `${sec} s`;
  const m = Math.floor(sec / 60);
  if (m < 60) return `${m} min ${sec % 60} s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr} h ${m % 60} min`;
  return `${Math.floor(hr / 24)} d ${hr % 24} h`;
}

export function fmtAge(ts) {
  const sec = Math.max(0, Date.now() / 1000 - ts);
  if (sec < 45) return `${Math.round(sec)} s ago`;
  if (sec < 3600) return `${Math.round(sec / 60)} min ago`;
  if (sec < 86400 * 2) return `${Math.round(sec / 3600)} h ago`;
  return `${Math.round(sec / 86400)} d ago`;
}

export function isoTime(ts) {
  return new Date(ts * 1000).toISOString();
}

export function budgetsText(b) {
  if (!b) return 'space defaults';
  const parts = [];
  if (b.flops) parts.push(`FLOPs ${fmtNum(b.flops)}`);
  if (b.params) parts.push(`params ${fmtNum(b.params)}`);
  if (b.layers) parts.push(`layers ${b.layers}`);
  if (b.latency_ms) parts.push(`latency ${fmtNum(b.latency_ms)} ms`);
  return parts.length ? parts.join(' · ') : 'space defaults';
}

export function badge(state) {
  return h('span', { class: `badge state-${state}`, 'data-state': state }, state);
}
