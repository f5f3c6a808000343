// The zennas console: sign in, list searches, start one, follow it live, download its backbone.
// Routes live in the URL fragment (#/, #/new, #/searches/<id>), so the service serves one page.

import { api, ApiError, currentSession, onUnauthorized, searchUrl, signIn, signOut } from './api.js';
import { backbone, bestCurve, countsBar, draw, paretoFront, populationRange } from './charts.js';
import { badge, budgetsText, clear, fmtAge, fmtDuration, fmtInt, fmtNum, h, isoTime } from './dom.js';
import { newSearchForm } from './form.js';

const FINISHED = new Set(['succeeded', 'failed', 'cancelled']);
const main = document.getElementById('main');
const nav = document.getElementById('nav');
const sessionBox = document.getElementById('session');
let session = null;
let cleanup = [];  // stop timers and streams when leaving a view

function leaveView() {
  for (const fn of cleanup.splice(0)) {
    try { fn(); } catch { /* already stopped */ }
  }
}

function setTitle(text) {
  document.title = `${text} · zennas console`;
}

function show(...nodes) {
  leaveView();
  clear(main).append(...nodes);
  const h1 = main.querySelector('h1');
  if (h1) {  // a new view: move focus to its heading so keyboard and screen-reader users land there
    h1.setAttribute('tabindex', '-1');
    h1.focus();
  }
}

function markNav(which) {
  for (const a of nav.querySelectorAll('a[data-nav]')) {
    if (a.dataset.nav === which) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

function problemNotice(e) {
  const text = e instanceof ApiError ? `${e.problem.title || 'Error'}: ${e.message}` : String(e);
  return h('p', { class: 'notice bad', role: 'alert' }, text);
}

// -- sign in -------------------------------------------------------------------------------------
function signInView(message) {
  nav.hidden = true;
  sessionBox.hidden = true;
  setTitle('Sign in');
  const input = h('input', {
    type: 'password', id: 'api-key', name: 'api_key', autocomplete: 'off', spellcheck: 'false', required: true,
    'aria-describedby': 'api-key-hint api-key-error',
  });
  const err = h('p', { class: 'error', id: 'api-key-error', 'data-error-for': 'api_key' }, message || '');
  const button = h('button', { type: 'submit' }, 'Sign in');
  const form = h('form', { class: 'panel narrow', novalidate: true },
    h('div', { class: 'field' },
      h('label', { for: 'api-key' }, 'API key'), input,
      h('p', { class: 'hint', id: 'api-key-hint' },
        'Exchanged for a session cookie; the key itself is not kept by this page. Create one with ',
        h('code', {}, 'zennas keys create --tenant NAME'), '.'),
      err),
    h('div', { class: 'actions' }, button));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.textContent = '';
    input.removeAttribute('aria-invalid');
    if (!input.value.trim()) {
      err.textContent = 'API key: enter your key';
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      return;
    }
    button.disabled = true;
    try {
      session = await signIn(input.value.trim());
      input.value = '';
      started();
    } catch (e) {
      err.textContent = e instanceof ApiError && e.status === 401 ? 'API key: not valid (or revoked)' : `API key: ${e.message}`;
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    } finally {
      button.disabled = false;
    }
  });
  show(h('h1', {}, 'Sign in'), h('p', {}, 'Sign in with an API key of your tenant to start and follow backbone searches.'), form);
  input.focus();
}

function started() {
  nav.hidden = false;
  sessionBox.hidden = false;
  document.getElementById('tenant-name').textContent = session.tenant;
  route();
}

// -- the searches list -------------------------------------------------------------------------
function progressOf(job) {
  const p = job.progress || {};
  const total = p.iterations || (job.spec && job.spec.iterations) || 0;
  const done = job.state === 'succeeded' ? total : (p.iteration || 0);
  return { done, total, pct: total ? Math.min(100, Math.round((100 * done) / total)) : 0 };
}

function jobRow(job) {
  const spec = job.spec || {};
  const pr = progressOf(job);
  const best = job.result && job.result.best ? job.result.best.score : (job.progress || {}).best_score;
  const link = h('a', { href: `#/searches/${encodeURIComponent(job.id)}` }, h('code', {}, job.id));
  return h('tr', { 'data-id': job.id },
    h('th', { scope: 'row', 'data-label': 'Search' }, link),
    h('td', { 'data-label': 'State' }, badge(job.state)),
    h('td', { 'data-label': 'Space' }, spec.space || '–'),
    h('td', { 'data-label': 'Score' }, spec.score || '–'),
    h('td', { 'data-label': 'Budgets' }, budgetsText(spec.budgets)),
    h('td', { 'data-label': 'Progress' }, h('div', { class: 'progress-cell' },
      h('progress', { max: 100, value: pr.pct, 'aria-label': `progress of ${job.id}` }), `${pr.pct}%`)),
    h('td', { 'data-label': 'Best', class: 'num' }, fmtNum(best)),
    h('td', { 'data-label': 'Age' }, h('time', { datetime: isoTime(job.created_at), title: new Date(job.created_at * 1000).toLocaleString() },
      fmtAge(job.created_at))));
}

async function listView() {
  markNav('list');
  setTitle('Searches');
  const body = h('div', { id: 'jobs', 'aria-busy': 'true' }, h('p', { class: 'muted' }, 'Loading searches…'));
  const status = h('p', { class: 'visually-hidden', 'aria-live': 'polite', id: 'jobs-status' });
  show(h('div', { class: 'job-head' }, h('h1', {}, 'Searches'),
    h('a', { class: 'button', href: '#/new' }, 'New search')), status, body);
  let timer = null;
  let stopped = false;
  cleanup.push(() => { stopped = true; clearTimeout(timer); });
  let lastSummary = '';
  async function refresh() {
    let items;
    try {
      items = (await api('/v1/searches?limit=100')).items;
    } catch (e) {
      if (stopped) return;
      clear(body).append(problemNotice(e));
      timer = setTimeout(refresh, 10000);
      return;
    }
    if (stopped) return;
    body.setAttribute('aria-busy', 'false');
    if (!items.length) {
      clear(body).append(h('p', { class: 'empty' }, 'No searches yet. ', h('a', { href: '#/new' }, 'Start one'), '.'));
    } else {
      const table = h('table', { class: 'jobs' },
        h('caption', {}, `${items.length} most recent search${items.length === 1 ? '' : 'es'} of tenant ${session.tenant}`),
        h('thead', {}, h('tr', {}, ['Search', 'State', 'Space', 'Score', 'Budgets', 'Progress', 'Best', 'Age']
          .map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, items.map(jobRow)));
      clear(body).append(h('div', { class: 'table-wrap' }, table));
    }
    const active = items.filter((j) => !FINISHED.has(j.state)).length;
    const summary = `${items.length} searches, ${active} queued or running`;
    if (summary !== lastSummary) { status.textContent = summary; lastSummary = summary; }
    timer = setTimeout(refresh, active ? 2000 : 10000);
  }
  await refresh();
}

// -- new search --------------------------------------------------------------------------------
async function newView() {
  markNav('new');
  setTitle('New search');
  const holder = h('div', {}, h('p', { class: 'muted' }, 'Loading the search schema…'));
  show(h('h1', {}, 'New search'),
    h('p', { class: 'muted' }, 'Fields come from the service\'s search schema; anything left empty takes its default.'),
    holder);
  try {
    const form = await newSearchForm({ onCreated: (job) => { location.hash = `#/searches/${encodeURIComponent(job.id)}`; } });
    clear(holder).append(h('div', { class: 'panel' }, form));
  } catch (e) {
    clear(holder).append(problemNotice(e));
  }
}

// -- latency profiles ----------------------------------------------------------------------------
async function profilesView() {
  markNav('profiles');
  setTitle('Latency profiles');
  const body = h('div', { id: 'profiles', 'aria-busy': 'true' }, h('p', { class: 'muted' }, 'Loading profiles…'));
  show(h('h1', {}, 'Latency profiles'),
    h('p', { class: 'muted' }, 'Device latency profiles of this tenant. Build one on the target machine with ',
      h('code', {}, 'zennas profile build'), ', upload it with ', h('code', {}, 'POST /v1/profiles'),
      ', and name it in a search\'s latency.profile with a latency budget.'), body);
  let items;
  try {
    items = (await api('/v1/profiles')).items;
  } catch (e) {
    clear(body).append(problemNotice(e));
    return;
  }
  body.setAttribute('aria-busy', 'false');
  if (!items.length) {
    clear(body).append(h('p', { class: 'empty' }, 'No profiles yet.'));
    return;
  }
  const row = (p) => {
    const sm = p.summary || {};
    const fp = sm.fingerprint || {};
    const res = sm.resolution || [];
    return h('tr', { 'data-name': p.name },
      h('th', { scope: 'row', 'data-label': 'Name' }, h('code', {}, p.name)),
      h('td', { 'data-label': 'Runtime' }, `${sm.runtime || '–'}, ${sm.threads ?? '–'} thread(s), ${sm.precision || ''}`),
      h('td', { 'data-label': 'Space' }, sm.space || '–'),
      h('td', { 'data-label': 'Input' }, `${res[0] ?? '–'}×${res[1] ?? '–'}, batch ${sm.batch ?? '–'}`),
      h('td', { 'data-label': 'Cells', class: 'num' }, fmtInt(sm.cells)),
      h('td', { 'data-label': 'Measured on' }, `${fp.cpu || '–'} (${fp.cores ?? '?'} cores)`),
      h('td', { 'data-label': 'Checksum' }, h('code', { title: p.checksum }, String(p.checksum || '').slice(0, 19))),
      h('td', { 'data-label': 'Uploaded' }, h('time', { datetime: isoTime(p.created_at) }, fmtAge(p.created_at))));
  };
  clear(body).append(h('div', { class: 'table-wrap' }, h('table', { class: 'jobs', id: 'profiles-table' },
    h('caption', {}, `${items.length} profile${items.length === 1 ? '' : 's'} of tenant ${session.tenant}`),
    h('thead', {}, h('tr', {}, ['Name', 'Runtime', 'Space', 'Input', 'Cells', 'Measured on', 'Checksum', 'Uploaded']
      .map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, items.map(row)))));
}

// -- one search ----------------------------------------------------------------------------------
// predicted vs measured latency of the top candidates a latency-profile search verified on the device
function latencyTable(lat) {
  const p = lat.profile || {};
  const rows = (lat.candidates || []).map((c) => h('tr', { class: c.rank === lat.winner ? 'winner' : null },
    h('td', {}, c.rank), h('td', {}, c.number), h('td', { class: 'num' }, fmtNum(c.score)),
    h('td', { class: 'num' }, fmtNum(c.predicted_ms)), h('td', { class: 'num' }, fmtNum(c.measured_ms)),
    h('td', { class: 'num' }, c.error === null || c.error === undefined ? '–' : `${(100 * c.error).toFixed(1)} %`),
    h('td', {}, (c.verdict || '–') + (c.rank === lat.winner ? ' (result)' : '')
      + (c.speculative ? '; measured while the search ran' : ''))));
  return h('section', { class: 'panel', 'aria-labelledby': 'latency-h', id: 'latency-panel' },
    h('h2', { id: 'latency-h' }, 'Latency on the device'),
    h('p', { class: 'muted' }, `Predicted by profile ${p.ref || '?'} (${p.runtime || '?'}, ${p.threads ?? '?'} thread(s), `
      + `batch ${p.batch ?? '?'}); ${lat.measured ?? rows.length} of the top ${rows.length} candidates measured `
      + `(${lat.measured_during_search ?? 0} while the search ran), ${fmtNum(lat.seconds, 3)} s after it, against a budget of `
      + `${fmtNum(lat.budget_ms)} ms. The result is the best-scoring one whose measured latency meets it.`),
    h('div', { class: 'table-wrap' }, h('table', { class: 'structure-table', id: 'latency-table' },
      h('caption', { class: 'visually-hidden' }, 'Predicted and measured latency of the verified candidates'),
      h('thead', {}, h('tr', {}, ['#', 'trial', 'score', 'predicted ms', 'measured ms', 'prediction error', 'budget']
        .map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows))),
    ...(lat.warnings || []).map((w) => h('p', { class: 'muted' }, `Warning: ${w}`)));
}

function fact(label, value, attrs = {}) {
  return h('div', {}, h('dt', {}, label), h('dd', attrs, value));
}

function structureTable(structure, stages) {
  const blocks = structure.blocks || [];
  const ends = new Map((stages || []).map((st) => [st.end, st.name]));
  return h('table', { class: 'structure-table' },
    h('caption', { class: 'visually-hidden' }, 'Blocks of the chosen backbone'),
    h('thead', {}, h('tr', {}, ['#', 'type', 'in', 'out', 'stride', 'kernel', 'layers', 'bottleneck', 'stage out']
      .map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, blocks.map((b, i) => h('tr', {},
      h('td', {}, i), h('td', {}, b.type), h('td', {}, b.in), h('td', {}, b.out), h('td', {}, b.stride),
      h('td', {}, b.kernel), h('td', {}, b.layers ?? 1), h('td', {}, b.bottleneck ?? '–'), h('td', {}, ends.get(i) || '')))));
}

async function jobView(id) {
  markNav(null);
  setTitle(`Search ${id}`);
  show(h('h1', {}, 'Search ', h('code', {}, id)), h('p', { class: 'muted' }, 'Loading…'));
  let job;
  try {
    job = await api(searchUrl(id));
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      setTitle('Not found');
      show(h('h1', {}, 'Search not found'),
        h('p', { class: 'notice bad', id: 'not-found' }, 'Not found: there is no search ', h('code', {}, id),
          ` for tenant ${session.tenant}. It may have been deleted, or belong to another tenant.`),
        h('p', {}, h('a', { href: '#/' }, 'Back to the searches')));
      return;
    }
    show(h('h1', {}, 'Search ', h('code', {}, id)), problemNotice(e));
    return;
  }
  renderJob(job);
}

function renderJob(initial) {
  const id = initial.id;
  const spec = initial.spec || {};
  const isNsga = spec.sampler === 'nsga2';
  const isEvolution = (spec.sampler || 'evolution') === 'evolution';  // the others keep no population
  let job = initial;
  let progress = { ...(initial.progress || {}) };
  let curve = [];  // [[iteration, best score]] as the stream reports it
  let lastBest = null;
  let lastLive = 0;

  const stateBadge = h('span', { id: 'job-state' }, badge(job.state));
  const prog = h('progress', { class: 'big', id: 'job-progress', max: 100, value: 0, 'aria-labelledby': 'progress-h' });
  const progText = h('p', { class: 'progress-line', id: 'progress-text' });
  const live = h('p', { class: 'visually-hidden', id: 'progress-live', role: 'status', 'aria-live': 'polite' });
  const countsText = h('p', { class: 'counts', id: 'counts-text' });
  const countsBox = h('div', { class: 'chart-box slim', id: 'counts-chart' });
  const cancelBtn = h('button', { type: 'button', class: 'danger', id: 'cancel' }, 'Cancel search');
  const errorBox = h('div', { id: 'job-error' });
  const bestBox = h('div', { class: 'chart-box', id: 'best-chart' });
  const popBox = h('div', { class: 'chart-box', id: 'population-chart' });
  const paretoBox = h('div', { class: 'chart-box', id: 'pareto-chart' });
  const backboneBox = h('div', { class: 'chart-box', id: 'backbone-chart' });
  const backboneNote = h('p', { class: 'muted', id: 'backbone-note' });
  const backboneTable = h('details', {}, h('summary', {}, 'Blocks as a table'));
  const downloads = h('div', { class: 'downloads', id: 'downloads' });
  const latencyBox = h('div', { id: 'latency' });

  const b = spec.budgets || {};
  const facts = h('dl', { class: 'facts' },
    fact('Space', spec.space || '–'), fact('Score', spec.score || '–'),
    fact('Sampler', isNsga ? `nsga2 (${(spec.objectives || []).join(', ')})` : (spec.sampler || '–')),
    fact('Budgets', budgetsText(b)), fact('Resolution', `${spec.height || '–'}×${spec.width || '–'}`),
    fact('Population', fmtInt(spec.population)), fact('Iterations', fmtInt(spec.iterations)),
    fact('Seed', spec.seed ?? '–'),
    fact('Created', h('time', { datetime: isoTime(job.created_at) }, new Date(job.created_at * 1000).toLocaleString())));

  cancelBtn.addEventListener('click', async () => {
    cancelBtn.disabled = true;
    cancelBtn.textContent = 'Cancelling…';
    try {
      job = await api(`${searchUrl(id)}/cancel`, { method: 'POST' });
      live.textContent = `Cancel requested; the search stops at its next checkpoint.`;
      update();
    } catch (e) {
      errorBox.replaceChildren(problemNotice(e));
      cancelBtn.disabled = false;
      cancelBtn.textContent = 'Cancel search';
    }
  });

  const chartPanel = (title, box, caption, attrs = {}) => h('section', { class: 'panel', ...attrs },
    h('h2', {}, title), h('figure', { class: 'chart' }, box, h('figcaption', {}, caption)));

  show(
    h('div', { class: 'job-head' }, h('h1', {}, 'Search ', h('code', {}, id)), stateBadge),
    h('p', {}, h('a', { href: '#/' }, '← All searches')),
    facts,
    errorBox,
    h('section', { class: 'panel', 'aria-labelledby': 'progress-h' },
      h('h2', { id: 'progress-h' }, 'Progress'), prog, progText, live, countsBox, countsText,
      h('div', { class: 'actions' }, cancelBtn)),
    h('div', { class: 'grid' },
      chartPanel('Best score over iterations', bestBox, 'Best score found so far after each iteration.'),
      isEvolution ? chartPanel('Population', popBox, 'The current population\'s scores: the range from min to max, the median (bar) and the mean (diamond).') : null,
      isNsga ? chartPanel('Pareto front', paretoBox, 'Non-dominated candidates, score against FLOPs; the ringed point is the one chosen (highest score).', { id: 'pareto-panel' }) : null),
    h('section', { class: 'panel', 'aria-labelledby': 'backbone-h' },
      h('h2', { id: 'backbone-h' }, 'Chosen backbone'), backboneNote,
      h('figure', { class: 'chart' }, backboneBox,
        h('figcaption', {}, 'One bar per block from input (top) to output: length ~ output channels, thickness ~ depth (layers). '
          + 'Brackets on the right are the stages C1…C5; the orange ones (C3–C5) are the feature maps the detection neck takes.')),
      backboneTable),
    latencyBox,
    h('section', { class: 'panel', 'aria-labelledby': 'downloads-h' },
      h('h2', { id: 'downloads-h' }, 'Downloads'), downloads));

  function drawCharts() {
    const scoreName = spec.score || 'score';
    let pts = curve;
    let xMax = progress.iteration || 0;
    if (job.state === 'succeeded' && job.result && Array.isArray(job.result.best_curve) && job.result.best_curve.length) {
      pts = job.result.best_curve.map(([t, sc]) => [t, sc]);
      xMax = (job.result.counts && job.result.counts.trials) || xMax;
    }
    draw(bestBox, (w) => bestCurve(w, { points: pts, xMax, scoreName }));
    if (isEvolution) draw(popBox, (w) => populationRange(w, progress.population));
    if (isNsga) {
      const front = (job.result && job.result.pareto_front && job.result.pareto_front.length)
        ? job.result.pareto_front : (progress.pareto_front || []);
      draw(paretoBox, (w) => paretoFront(w, { front, budgetFlops: b.flops }));
    }
    const structure = job.result && job.result.best ? job.result.best.structure : progress.best_structure;
    if (structure && structure.blocks && structure.blocks.length) {
      backboneNote.textContent = job.state === 'succeeded'
        ? `The search's result: score ${fmtNum(job.result.best.score)}, ${fmtNum(job.result.best.costs.flops)} FLOPs, `
          + `${fmtNum(job.result.best.costs.params)} parameters, ${job.result.best.costs.layers} layers.`
        : 'The best structure so far (it changes while the search runs).';
      const stages = job.result && job.result.best ? job.result.best.stages : progress.best_stages;
      draw(backboneBox, (w) => backbone(w, { structure, stages, height: spec.height || 480, imgWidth: spec.width }));
      const summaryEl = backboneTable.querySelector('summary');
      backboneTable.replaceChildren(summaryEl, structureTable(structure, stages));
    } else {
      backboneNote.textContent = 'No structure yet: it appears with the first scored candidate.';
    }
  }

  function update() {
    stateBadge.replaceChildren(badge(job.state));
    const total = progress.iterations || spec.iterations || 0;
    const done = job.state === 'succeeded' ? total : (progress.iteration || 0);
    const pct = total ? Math.min(100, (100 * done) / total) : 0;
    prog.value = pct;
    prog.textContent = `${Math.round(pct)}%`;
    const eta = FINISHED.has(job.state) ? null : progress.eta_s;
    progText.replaceChildren(
      h('span', {}, `Iteration ${fmtInt(done)} / ${fmtInt(total)} (${Math.round(pct)}%)`),
      h('span', {}, `${fmtNum(progress.candidates_per_s || 0, 3)} candidates/s`),
      h('span', {}, FINISHED.has(job.state) ? `finished: ${job.state}` : `ETA ${fmtDuration(eta)}`),
      // the result's best once there is one: a latency-verified winner need not be the evolution's best
      h('span', {}, `best ${fmtNum(job.result && job.result.best ? job.result.best.score : progress.best_score)}`),
      ...(job.result && Number.isFinite(job.result.bound)
        ? [h('span', { title: 'no structure the search can reach under the budgets scores more (optimality certificate)' },
          `bound ${fmtNum(job.result.bound, 6)}: best ${fmtNum(job.result.gap_pct, 3)} % below`
          + (job.result.certificate && job.result.certificate.best_from ? ' (from the bound programme)' : ''))]
        : []));
    const counts = (job.result && job.result.counts) || progress;
    const ev = counts.evaluated || 0;
    const rej = counts.rejected || 0;
    const fail = counts.failed || 0;
    draw(countsBox, (w) => countsBar(w, { evaluated: ev, rejected: rej, failed: fail }));
    countsText.replaceChildren(
      h('span', {}, h('span', { class: 'swatch sw-eval', 'aria-hidden': 'true' }), `Evaluated (accepted): ${fmtInt(ev)}`),
      h('span', {}, h('span', { class: 'swatch sw-rej', 'aria-hidden': 'true' }), `Rejected over budget: ${fmtInt(rej)}`),
      h('span', {}, h('span', { class: 'swatch sw-fail', 'aria-hidden': 'true' }), `Failed: ${fmtInt(fail)}`));
    cancelBtn.hidden = FINISHED.has(job.state);
    if (job.error) errorBox.replaceChildren(h('p', { class: 'job-error', role: 'alert' }, `The search failed: ${job.error}`));
    // the live region speaks at most every 10 s, and always when the state changes
    const now = Date.now();
    const said = live.dataset.state;
    if (said !== job.state || now - lastLive > 10000) {
      lastLive = now;
      live.dataset.state = job.state;
      live.textContent = FINISHED.has(job.state)
        ? `Search ${job.state}.${job.state === 'succeeded' ? ` Best score ${fmtNum(job.result && job.result.best && job.result.best.score)}.` : ''}`
        : `Search ${job.state}: ${Math.round(pct)}% done, ETA ${fmtDuration(eta)}.`;
    }
    drawCharts();
    renderDownloads();
    const lat = job.result && job.result.latency;
    if (lat && lat.candidates && !latencyBox.firstChild) latencyBox.append(latencyTable(lat));
  }

  let downloadsFor = null;
  async function renderDownloads() {
    if (job.state !== 'succeeded') {
      if (downloadsFor !== job.state) {
        downloadsFor = job.state;
        downloads.replaceChildren(h('p', { class: 'muted' }, FINISHED.has(job.state)
          ? `Nothing to download: the search ${job.state}.` : 'Downloads appear when the search succeeds.'));
      }
      return;
    }
    if (downloadsFor === 'succeeded') return;
    downloadsFor = 'succeeded';
    const base = searchUrl(id);
    const links = [
      h('a', { class: 'button', id: 'dl-structure', href: `${base}/backbone?format=json`, download: `zennas-${id}-structure.json` }, 'Structure (JSON)'),
      h('a', { class: 'button', id: 'dl-bundle', href: `${base}/backbone`, download: `zennas-${id}.zip` }, 'Bundle (zip)'),
    ];
    downloads.replaceChildren(...links);
    try {
      const manifest = await api(`${base}/artifacts/manifest.json`);
      const files = manifest.files || {};
      // the config is named after the searched detector: mmdet/<detector>_<neck>_config.py
      const mmdet = Object.keys(files).find((p) => p.startsWith('mmdet/') && p.endsWith('_config.py'));
      const extra = [
        ...(mmdet ? [[mmdet, 'dl-mmdet', 'MMDetection config', `zennas-${id}-${mmdet.slice('mmdet/'.length)}`]] : []),
        ['report.html', 'dl-report', 'HTML report', `zennas-${id}-report.html`],
      ];
      for (const [path, elId, label, name] of extra) {
        if (files[path]) downloads.append(h('a', { class: 'button secondary', id: elId, href: `${base}/artifacts/${path}`, download: name }, label));
      }
    } catch { /* the zip still has everything */ }
  }

  // live updates: the SSE stream, with a polling fallback if it cannot be used
  let es = null;
  let poll = null;
  function onProgress(data) {
    progress = { ...progress, ...data };
    if (data.state) job = { ...job, state: data.state };
    if (Number.isFinite(data.best_score) && data.best_score !== lastBest) {
      lastBest = data.best_score;
      curve.push([data.iteration || 0, data.best_score]);
    }
    update();
  }
  async function refetch() {
    try {
      job = await api(searchUrl(id));
      progress = { ...progress, ...(job.progress || {}) };
      update();
    } catch { /* keep showing what we have */ }
  }
  function startPolling() {
    if (poll) return;
    poll = setInterval(async () => {
      await refetch();
      if (FINISHED.has(job.state)) { clearInterval(poll); poll = null; }
    }, 2000);
  }
  if (!FINISHED.has(job.state) || !job.result) {
    es = new EventSource(`${searchUrl(id)}/events`);
    es.addEventListener('progress', (ev) => {
      try { onProgress(JSON.parse(ev.data)); } catch { /* malformed event: skip */ }
    });
    es.addEventListener('end', async () => {
      es.close();
      es = null;
      await refetch();
    });
    es.addEventListener('error', () => {
      if (es && es.readyState === EventSource.CLOSED) {
        es = null;
        startPolling();
      }
    });
  }
  cleanup.push(() => { if (es) es.close(); if (poll) clearInterval(poll); });
  if (progress.best_score !== undefined && progress.best_score !== null) {
    curve.push([progress.iteration || 0, progress.best_score]);
    lastBest = progress.best_score;
  }
  update();
}

// -- routing -------------------------------------------------------------------------------------
function route() {
  if (!session) return;
  const hash = location.hash || '#/';
  const m = hash.match(/^#\/searches\/([^/?#]+)$/);
  if (m) return jobView(decodeURIComponent(m[1]));
  if (hash === '#/new') return newView();
  if (hash === '#/profiles') return profilesView();
  return listView();
}

window.addEventListener('hashchange', route);
document.getElementById('sign-out').addEventListener('click', async () => {
  leaveView();
  await signOut().catch(() => {});
  session = null;
  signInView();
});
onUnauthorized(() => {
  if (!session) return;
  session = null;
  leaveView();
  signInView('Your session ended; sign in again.');
});

async function boot() {
  try {
    session = await currentSession();
  } catch (e) {
    show(h('h1', {}, 'zennas console'), problemNotice(e));
    return;
  }
  if (session) started();
  else signInView();
}

boot();
