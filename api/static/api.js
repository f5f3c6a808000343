// The service's HTTP API as the console uses it: same-origin fetch with the session cookie, the CSRF
// token on state-changing requests, and problem documents turned into ApiError.
//
// The CSRF token lives only in this module's memory: never in the URL, localStorage or
// sessionStorage. After a reload it is read back with GET /v1/session (the cookie is HttpOnly).

let csrfToken = null;
let unauthorizedHandler = () => {};

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
    this.errors = Array.isArray(this.problem.errors) ? this.problem.errors : [];
  }
}

export function onUnauthorized(fn) {
  unauthorizedHandler = fn;
}

export async function api(path, { method = 'GET', body, headers = {}, signal, quiet401 = false } = {}) {
  const h = { Accept: 'application/json, application/problem+json', ...headers };
  if (body !== undefined) h['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD' && csrfToken) h['X-CSRF-Token'] = csrfToken;
  let r;
  try {
    r = await fetch(path, {
      method, headers: h, signal, credentials: 'same-origin', cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, { title: 'Network error', detail: 'the service could not be reached' });
  }
  if (r.status === 204 || r.status === 304) return null;
  const type = r.headers.get('content-type') || '';
  const data = type.includes('json') ? await r.json().catch(() => null) : await r.text();
  if (!r.ok) {
    const err = new ApiError(r.status, data && typeof data === 'object' ? data : { detail: String(data || r.statusText) });
    if (r.status === 401 && !quiet401) unauthorizedHandler(err);
    throw err;
  }
  return data;
}

export async function currentSession() {
  try {
    const s = await api('/v1/session', { quiet401: true });
    csrfToken = s.csrf_token;
    return s;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return null;
    throw e;
  }
}

export async function signIn(apiKey) {
  const s = await api('/v1/session', { method: 'POST', body: { api_key: apiKey }, quiet401: true });
  csrfToken = s.csrf_token;
  return s;
}

export async function signOut() {
  try {
    await api('/v1/session', { method: 'DELETE', quiet401: true });
  } finally {
    csrfToken = null;
  }
}

let openapiCache = null;
export async function searchSchema() {
  if (!openapiCache) openapiCache = api('/openapi.json');
  const doc = await openapiCache;
  const schemas = (doc.components && doc.components.schemas) || {};
  return { root: schemas.SearchCreate, schemas };
}

export const searchUrl = (id) => `/v1/searches/${encodeURIComponent(id)}`;
