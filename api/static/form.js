// The "new search" form, built from the service's own schema (GET /openapi.json,
// components.schemas.SearchCreate) and the shipped spaces (GET /v1/spaces). The API's problem
// documents name the field at fault (errors[].field, e.g. "population" or "budgets.flops"); each
// message is shown next to its field, and listed in a summary at the top of the form.

import { api, ApiError, searchSchema } from './api.js';
import { fmtNum, h } from './dom.js';

// what the form offers, in order; the rest of the schema (inline spaces, warm starts…) is API-only
const FIELDS = ['space', 'score', 'resolution', 'budgets', 'population', 'iterations', 'sampler', 'objectives', 'seed'];
const LABELS = {
  space: 'Search space', score: 'Zero-shot score', resolution: 'Resolution (px, square input)',
  budgets: 'Budgets', flops: 'FLOPs', params: 'Parameters', layers: 'Layers', latency_ms: 'Latency (ms)',
  population: 'Population', iterations: 'Iterations', sampler: 'Sampler', objectives: 'NSGA-II objectives',
  seed: 'Seed',
};
const HINTS = {
  space: 'the block types and mutation rules searched',
  score: 'entropy-analytic is closed-form and fast; the others run forward passes on workers',
  budgets: 'leave a budget empty to use the space\'s default',
  population: 'structures kept by the evolution',
  iterations: 'candidates generated and checked against the budgets',
  sampler: 'evolution (MAE-DET), NSGA-II (multi-objective) or random',
  objectives: 'minimized beside the score (NSGA-II only)',
  seed: 'the same seed and spec give the same result',
};

const idFor = (path) => `f-${path.replace(/[^a-zA-Z0-9]+/g, '-')}`;

function deref(schema, schemas) {
  let sch = schema || {};
  if (sch.$ref) sch = { ...schemas[sch.$ref.split('/').pop()], ...sch, $ref: undefined };
  if (Array.isArray(sch.allOf) && sch.allOf.length === 1) sch = { ...deref(sch.allOf[0], schemas), ...sch, allOf: undefined };
  if (Array.isArray(sch.anyOf)) {
    const options = sch.anyOf.filter((v) => v.type !== 'null');
    if (options.length === 1) {
      const inner = deref(options[0], schemas);
      sch = { ...inner, ...sch, anyOf: undefined, nullable: options.length < sch.anyOf.length };
    }
  }
  return sch;
}

function rangeHint(sch) {
  const f = (v) => (Number.isInteger(v) && Math.abs(v) < 1e10 ? v.toLocaleString('en-US') : fmtNum(v));
  const parts = [];
  const lo = sch.minimum ?? sch.exclusiveMinimum;
  if (lo !== undefined && sch.maximum !== undefined) parts.push(`${f(lo)} – ${f(sch.maximum)}`);
  else if (sch.exclusiveMinimum !== undefined) parts.push(`> ${f(sch.exclusiveMinimum)}`);
  else if (lo !== undefined) parts.push(`≥ ${f(lo)}`);
  if (sch.multipleOf && !/multiple of/.test(sch.description || '')) parts.push(`multiple of ${sch.multipleOf}`);
  return parts.join(', ');
}

export async function newSearchForm({ onCreated }) {
  const [{ root, schemas }, spaces] = await Promise.all([
    searchSchema(),
    api('/v1/spaces').catch(() => null),
  ]);
  if (!root || !root.properties) throw new ApiError(500, { detail: 'the service\'s schema has no SearchCreate' });
  const fields = new Map(); // path -> {input(s), label, error element, kind}
  const summary = h('div', { class: 'error-summary', tabindex: '-1', hidden: true, role: 'alert', id: 'form-errors' });
  const form = h('form', { novalidate: true, class: 'new-search', 'aria-describedby': 'form-errors' });
  const idempotencyKey = (crypto.randomUUID && crypto.randomUUID()) || `${Date.now()}-${Math.random()}`;

  function fieldBox(path, sch, control, { label, hint } = {}) {
    const id = idFor(path);
    const name = path.split('.').pop();
    const text = label || LABELS[name] || sch.title || name;
    const hints = [hint ?? HINTS[name] ?? sch.description, rangeHint(sch)].filter(Boolean).join(' · ');
    const hintEl = hints ? h('p', { class: 'hint', id: `${id}-hint` }, hints) : null;
    const err = h('p', { class: 'error', id: `${id}-error`, 'data-error-for': path });
    control.id = id;
    control.name = path;
    control.setAttribute('aria-describedby', [hintEl ? `${id}-hint` : '', `${id}-error`].filter(Boolean).join(' '));
    fields.set(path, { control, label: text, err, sch });
    return h('div', { class: 'field', 'data-field': path }, h('label', { for: id }, text), control, hintEl, err);
  }

  function inputFor(path, sch) {
    if (Array.isArray(sch.enum)) {
      const sel = h('select', {}, sch.enum.map((v) => h('option', { value: v, selected: v === sch.default }, v)));
      return fieldBox(path, sch, sel);
    }
    const isInt = sch.type === 'integer';
    const inp = h('input', {
      type: 'number', inputmode: isInt ? 'numeric' : 'decimal', autocomplete: 'off',
      min: sch.minimum, max: sch.maximum, step: sch.multipleOf || (isInt ? 1 : 'any'),
      value: sch.default ?? null,
    });
    return fieldBox(path, sch, inp);
  }

  const budgetInputs = {};
  const parts = [];
  for (const name of FIELDS) {
    const raw = root.properties[name];
    if (!raw) continue;
    const sch = deref(raw, schemas);
    if (name === 'space' && Array.isArray(spaces) && spaces.length) {
      const sel = h('select', {}, spaces.map((sp) => h('option', { value: sp.name, selected: sp.name === sch.default },
        `${sp.name} — ${sp.description}`)));
      parts.push(fieldBox('space', sch, sel));
    } else if (name === 'budgets' && sch.properties) {
      const inner = Object.entries(sch.properties).map(([k, v]) => {
        const box = inputFor(`budgets.${k}`, deref(v, schemas));
        budgetInputs[k] = fields.get(`budgets.${k}`).control;
        return box;
      });
      const err = h('p', { class: 'error', id: 'f-budgets-error', 'data-error-for': 'budgets' });
      fields.set('budgets', { control: null, label: LABELS.budgets, err, sch });
      parts.push(h('fieldset', { 'data-field': 'budgets', 'aria-describedby': 'f-budgets-hint f-budgets-error' },
        h('legend', {}, LABELS.budgets), h('p', { class: 'hint', id: 'f-budgets-hint' }, HINTS.budgets),
        h('div', { class: 'fields-2' }, inner), err));
    } else if (name === 'objectives' && sch.items) {
      const opts = deref(sch.items, schemas).enum || [];
      const dflt = new Set(raw.default || ['flops']);
      const boxes = opts.map((o) => h('label', {}, h('input', {
        type: 'checkbox', name: 'objectives', value: o, checked: dflt.has(o),
      }), o));
      const err = h('p', { class: 'error', id: 'f-objectives-error', 'data-error-for': 'objectives' });
      fields.set('objectives', { control: boxes[0] && boxes[0].querySelector('input'), label: LABELS.objectives, err, sch });
      parts.push(h('fieldset', { 'data-field': 'objectives', id: 'f-objectives-set', 'aria-describedby': 'f-objectives-hint f-objectives-error' },
        h('legend', {}, LABELS.objectives), h('div', { class: 'checks' }, boxes),
        h('p', { class: 'hint', id: 'f-objectives-hint' }, HINTS.objectives), err));
    } else if (sch.type === 'integer' || sch.type === 'number' || Array.isArray(sch.enum)) {
      parts.push(inputFor(name, sch));
    } else {
      const inp = h('input', { type: 'text', autocomplete: 'off', value: sch.default ?? null });
      parts.push(fieldBox(name, sch, inp));
    }
  }

  const submit = h('button', { type: 'submit' }, 'Start search');
  form.append(summary, ...parts, h('div', { class: 'actions' }, submit, h('a', { href: '#/', class: 'button secondary' }, 'Cancel')));

  // budgets' placeholders: the chosen space's own defaults
  function spaceDefaults() {
    const name = fields.get('space') && fields.get('space').control.value;
    const sp = Array.isArray(spaces) ? spaces.find((x) => x.name === name) : null;
    for (const [k, inp] of Object.entries(budgetInputs)) {
      const v = sp && sp.budgets ? sp.budgets[k] : null;
      inp.placeholder = v ? `space default: ${k === 'flops' || k === 'params' ? v.toExponential(3).replace('e+', 'e') : v}` : 'no limit';
    }
    const res = fields.get('resolution');
    if (res && sp && sp.budgets && sp.budgets.height) res.control.placeholder = `space default: ${sp.budgets.height}`;
  }
  if (fields.get('space')) fields.get('space').control.addEventListener('change', spaceDefaults);
  spaceDefaults();

  // NSGA-II objectives only matter for the nsga2 sampler
  const objectivesSet = form.querySelector('#f-objectives-set');
  const sampler = fields.get('sampler') && fields.get('sampler').control;
  const syncObjectives = () => { if (objectivesSet && sampler) objectivesSet.hidden = sampler.value !== 'nsga2'; };
  if (sampler) sampler.addEventListener('change', syncObjectives);
  syncObjectives();

  function clearErrors() {
    summary.hidden = true;
    summary.replaceChildren();
    for (const f of fields.values()) {
      f.err.textContent = '';
      if (f.control) f.control.removeAttribute('aria-invalid');
    }
  }

  function fieldForError(path) {
    if (!path) return null;
    if (fields.has(path)) return path;
    if ((path === 'height' || path === 'width') && fields.has('resolution')) return 'resolution';
    const head = path.split(/[.[]/)[0];
    if (head === 'objectives' && fields.has('objectives')) return 'objectives';
    if (fields.has(head)) return head;
    return null;
  }

  function showErrors(errors, fallback) {
    clearErrors();
    const items = [];
    let first = null;
    for (const e of errors) {
      const path = fieldForError(e.field);
      const f = path ? fields.get(path) : null;
      const msg = e.message || 'invalid';
      if (f) {
        const text = `${f.label}: ${msg}`;
        f.err.textContent = f.err.textContent ? `${f.err.textContent} ${text}` : text;
        if (f.control) f.control.setAttribute('aria-invalid', 'true');
        first = first || f;
        items.push(h('li', {}, h('a', { href: `#${f.control ? f.control.id : idFor(path)}`, 'data-focus': f.control ? f.control.id : '' }, text)));
      } else {
        items.push(h('li', {}, `${e.field ? `${e.field}: ` : ''}${msg}`));
      }
    }
    if (!items.length) items.push(h('li', {}, fallback || 'the search was not accepted'));
    summary.append(h('h2', {}, items.length === 1 ? 'There is a problem' : `There are ${items.length} problems`), h('ul', {}, items));
    summary.hidden = false;
    summary.focus();
  }

  summary.addEventListener('click', (ev) => {  // links in the summary move focus to their field
    const a = ev.target.closest('a[data-focus]');
    if (!a || !a.dataset.focus) return;
    ev.preventDefault();
    const el = document.getElementById(a.dataset.focus);
    if (el) { el.focus(); el.scrollIntoView({ block: 'center' }); }
  });

  function readBody() {
    const body = {};
    const local = [];
    for (const [path, f] of fields) {
      const c = f.control;
      if (!c || path === 'objectives' || path === 'budgets') continue;
      let value;
      if (c.tagName === 'SELECT') value = c.value;
      else if (c.type === 'number') {
        if (c.validity.badInput) { local.push({ field: path, message: 'enter a number' }); continue; }
        if (c.value.trim() === '') continue;
        value = Number(c.value);
      } else {
        if (c.value.trim() === '') continue;
        value = c.value.trim();
      }
      const keys = path.split('.');
      let o = body;
      for (const k of keys.slice(0, -1)) o = (o[k] = o[k] || {});
      o[keys[keys.length - 1]] = value;
    }
    if (body.sampler === 'nsga2' && objectivesSet) {
      body.objectives = [...objectivesSet.querySelectorAll('input:checked')].map((i) => i.value);
    }
    return { body, local };
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const { body, local } = readBody();
    if (local.length) { showErrors(local); return; }
    submit.disabled = true;
    submit.textContent = 'Starting…';
    try {
      const job = await api('/v1/searches', { method: 'POST', body, headers: { 'Idempotency-Key': idempotencyKey } });
      clearErrors();
      onCreated(job);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      showErrors(e.errors, e.message);
    } finally {
      submit.disabled = false;
      submit.textContent = 'Start search';
    }
  });
  return form;
}
