// A foreign EHR for end-to-end tests, in ONE Node process on one loopback port:
//   /fhir/...           FHIR R4 from Medplum's FhirRouter + MemoryRepository (store.mjs), bearer token required
//   /fhir/metadata      a CapabilityStatement for the chosen mode (--capabilities full|minimal)
//   /fhir/.well-known/smart-configuration, /auth/authorize, /auth/token, /auth/jwks   (smart.mjs)
//   /_control/...       the tests' own API (no auth; never expose this), including an outage of N seconds and
//                       losing the answer to the next request that matches (done, but never answered)
// Usage: node ehr.mjs [--port N|0] [--capabilities full|minimal] [--no-validate]
// Prints one line on stdout when ready: {"port": N, "fhir_base": "..."}; everything else goes to stderr.
import http from 'node:http';
import { parseArgs } from 'node:util';
import { AuthServer } from './smart.mjs';
import { FhirStore, outcome } from './store.mjs';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.FOREIGN_EHR_PORT ?? '0' },
    capabilities: { type: 'string', default: process.env.FOREIGN_EHR_CAPABILITIES ?? 'full' },
    'no-validate': { type: 'boolean', default: false },
  },
});
if (!['full', 'minimal'].includes(args.capabilities)) {
  console.error(`--capabilities must be full or minimal, not ${args.capabilities}`);
  process.exit(2);
}

const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const LOGGED_HEADERS = ['content-type', 'accept', 'if-none-exist', 'if-match', 'if-none-match', 'prefer'];
const MAX_BODY = 16 * 1024 * 1024;

const store = new FhirStore({ mode: args.capabilities, validate: !args['no-validate'] });
let auth; // made once the port is known: its URLs and the id_token issuer name it
let requests = []; // what arrived on /fhir and /auth, for GET /_control/log
let outageUntil = 0; // until then every /fhir and /auth connection is dropped unanswered (POST /_control/outage)
let loseAnswers = []; // [{method, path}]: the next matching request is done, then its answer is lost (one each)

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    console.error(err);
    send(res, { status: 500, body: outcome(500, 'exception', String(err?.message ?? err)) });
  });
});

server.listen(Number(args.port), '127.0.0.1', () => {
  const { port } = server.address();
  const root = `http://127.0.0.1:${port}`;
  store.base = `${root}/fhir`;
  auth = new AuthServer({ root, fhirBase: store.base, onlyPatient: () => store.onlyPatient() });
  process.stdout.write(`${JSON.stringify({ port, fhir_base: store.base, capabilities: args.capabilities })}\n`);
});

// Everything is in memory: nothing to flush on the way out.
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));

async function handle(req, res) {
  const url = new URL(req.url, 'http://127.0.0.1');
  const raw = await readBody(req);
  if (url.pathname.startsWith('/_control/')) return send(res, await control(req.method, url.pathname, raw));

  const logged = url.pathname === '/fhir' || url.pathname.startsWith('/fhir/') || url.pathname.startsWith('/auth/');
  const entry = { t: Date.now() / 1000, method: req.method, path: req.url, headers: pick(req.headers) };
  if (Date.now() < outageUntil) {
    // Down, as an EHR behind a failed load balancer is: the connection closes with no answer at all.
    requests.push({ ...entry, status: 0, outage: true });
    req.socket.destroy();
    return;
  }
  const response = await route(req, url, raw, entry);
  const lose = loseAnswers.findIndex((r) => r.method === req.method && req.url.startsWith(r.path));
  if (lose >= 0) {
    // The work is done and stored; the answer never arrives (a connection cut on the way back).
    loseAnswers.splice(lose, 1);
    requests.push({ ...entry, status: response.status, lost: true });
    req.socket.destroy();
    return;
  }
  if (logged) requests.push({ ...entry, status: response.status });
  send(res, response);
}

async function route(req, url, raw, entry) {
  const { method } = req;
  const path = url.pathname.replace(/\/+$/, '');
  if (method === 'GET' && path === '/fhir/metadata')
    return { status: 200, body: store.capabilityStatement(), type: FHIR_JSON };
  if (method === 'GET' && path === '/fhir/.well-known/smart-configuration')
    return { status: 200, body: auth.smartConfiguration() };
  if (method === 'GET' && path === '/auth/jwks') return { status: 200, body: auth.jwks() };
  if (method === 'GET' && path === '/auth/authorize') return auth.authorize(Object.fromEntries(url.searchParams));
  if (method === 'POST' && path === '/auth/token') {
    const form = Object.fromEntries(new URLSearchParams(raw.toString('utf8')));
    entry.form = { grant_type: form.grant_type, scope: form.scope, client_id: form.client_id };
    const answer = await auth.token(form);
    return { ...answer, headers: { 'Cache-Control': 'no-store', Pragma: 'no-cache' } };
  }
  if (path !== '/fhir' && !path.startsWith('/fhir/')) return { status: 404, body: { error: 'not found' } };

  // Everything else under /fhir: a valid token first (401 says how to get one), then the store.
  const token = auth.bearer(req.headers.authorization);
  if (!token) {
    const challenge = `Bearer realm="${store.base}", error="invalid_token", error_description="a valid bearer token is required"`;
    return {
      status: 401,
      body: outcome(401, 'login', 'a valid bearer token is required'),
      type: FHIR_JSON,
      headers: { 'WWW-Authenticate': challenge },
    };
  }
  let body;
  if (raw.length) {
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      return { status: 400, body: outcome(400, 'invalid', 'the body is not JSON'), type: FHIR_JSON };
    }
  }
  if (method === 'POST' && path === '/fhir' && Array.isArray(body?.entry)) {
    // What a batch/transaction asked for, so tests can check how our server wrote.
    entry.bundle = { type: body.type, entry: body.entry.map((e) => ({ ...e.request })) };
  }
  const relative = req.url.slice('/fhir'.length).replace(/^\//, '');
  const answer = await store.handle({ method, url: relative, headers: req.headers, body, token });
  return { ...answer, type: FHIR_JSON };
}

/** The tests' API: clients, launches, tokens, the standalone patient, seeding data, and the request log. */
async function control(method, path, raw) {
  let body = {};
  try {
    body = raw.length ? JSON.parse(raw.toString('utf8')) : {};
  } catch {
    return { status: 400, body: { error: 'the body is not JSON' } };
  }
  const key = `${method} ${path}`;
  if (key === 'POST /_control/clients') return auth.registerClient(body);
  if (key === 'POST /_control/launch') return auth.createLaunch(body);
  if (key === 'POST /_control/token') return auth.controlToken(body);
  if (key === 'POST /_control/standalone-patient') return auth.setStandalone(body);
  if (key === 'POST /_control/resources') {
    try {
      return { status: 201, body: await store.seed(body) };
    } catch (err) {
      return { status: 400, body: err.outcome ?? { error: String(err.message) } };
    }
  }
  if (key === 'POST /_control/outage') {
    outageUntil = Date.now() + 1000 * Number(body.seconds ?? 1);
    return { status: 200, body: { until: outageUntil / 1000 } };
  }
  if (key === 'POST /_control/lose-answer') {
    loseAnswers.push({ method: String(body.method ?? 'POST'), path: String(body.path ?? '/fhir') });
    return { status: 200, body: { pending: loseAnswers.length } };
  }
  if (key === 'GET /_control/log') return { status: 200, body: { requests } };
  if (key === 'DELETE /_control/log') {
    requests = [];
    return { status: 204 };
  }
  return { status: 404, body: { error: `no control endpoint ${key}` } };
}

function pick(headers) {
  const picked = Object.fromEntries(LOGGED_HEADERS.filter((h) => headers[h] !== undefined).map((h) => [h, headers[h]]));
  if (headers.authorization) picked.authorization = headers.authorization.split(' ')[0]; // the scheme, never the token
  return picked;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) req.destroy(new Error('body too large'));
      else chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function send(res, { status, body, type = 'application/json', headers = {} }) {
  if (res.headersSent) return;
  const text = body === undefined || status === 204 ? '' : JSON.stringify(body);
  res.writeHead(status, { ...(text ? { 'Content-Type': type } : {}), ...headers });
  res.end(text);
}
