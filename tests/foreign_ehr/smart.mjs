// The foreign EHR's authorization server: a stand-in that behaves like the SMART project's smart-launcher-v2 in
// what a client sees (simulated login, auto-approval), with the habits of EHRs that trip non-conforming apps:
// SMART v1 scopes only (v2 `.cruds` scopes are silently dropped), an id_token signed RS256 with NO `kid`, and a
// JWKS with a single key without `kid`.  Clients, launches and the standalone patient come from the control API.
import crypto from 'node:crypto';

const V1_RESOURCE_SCOPE = /^(patient|user|system)\/(\*|[A-Z][A-Za-z]+)\.(read|write|\*)$/;
const OTHER_SCOPES = new Set(['openid', 'fhirUser', 'launch', 'launch/patient', 'online_access', 'offline_access']);
const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const CODE_TTL = 60_000;
const LAUNCH_TTL = 10 * 60_000;
const TOKEN_SECONDS = 3600;
const BACKEND_TOKEN_SECONDS = 300;

const random = () => crypto.randomBytes(24).toString('base64url');
const b64json = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
const unb64json = (text) => JSON.parse(Buffer.from(text, 'base64url').toString('utf8'));
const s256 = (verifier) => crypto.createHash('sha256').update(verifier).digest('base64url');
const oauthError = (status, error, description) => ({ status, body: { error, error_description: description } });

export const splitScope = (text) => [
  ...new Set(
    String(text ?? '')
      .split(/\s+/)
      .filter(Boolean),
  ),
];
const isV1 = (scope) => V1_RESOURCE_SCOPE.test(scope) || OTHER_SCOPES.has(scope);

/** {context, type, access} of a v1 resource scope, else undefined. */
function resourceScope(scope) {
  const match = V1_RESOURCE_SCOPE.exec(scope);
  return match ? { scope, context: match[1], type: match[2], access: match[3] } : undefined;
}

/** Whether a registered scope allows an asked one (`patient/*.*` covers `patient/Observation.read`). */
function covers(registered, asked) {
  const r = resourceScope(registered);
  const a = resourceScope(asked);
  if (!r || !a) return registered === asked;
  return r.context === a.context && ['*', a.type].includes(r.type) && ['*', a.access].includes(r.access);
}

/** The granted resource scopes that allow `access` (read|write) of `type` ('*' = any type). */
export function permitting(scopes, type, access) {
  return scopes
    .map(resourceScope)
    .filter((s) => s && (s.type === '*' || s.type === type) && (s.access === '*' || s.access === access));
}

export class AuthServer {
  constructor({ root, fhirBase, onlyPatient }) {
    this.fhirBase = fhirBase;
    this.authorizeEndpoint = `${root}/auth/authorize`;
    this.tokenEndpoint = `${root}/auth/token`;
    this.jwksUri = `${root}/auth/jwks`;
    this.onlyPatient = onlyPatient;
    this.clients = new Map();
    this.launches = new Map();
    this.codes = new Map();
    this.tokens = new Map();
    this.refreshTokens = new Map();
    this.usedJti = new Set();
    this.standalone = {};
    this.keys = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  }

  smartConfiguration() {
    return {
      issuer: this.fhirBase,
      jwks_uri: this.jwksUri,
      authorization_endpoint: this.authorizeEndpoint,
      token_endpoint: this.tokenEndpoint,
      token_endpoint_auth_methods_supported: ['private_key_jwt', 'none'],
      token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
      grant_types_supported: ['authorization_code', 'client_credentials', 'refresh_token'],
      response_types_supported: ['code'],
      id_token_signing_alg_values_supported: ['RS256'],
      code_challenge_methods_supported: ['S256'],
      scopes_supported: [
        'patient/*.read',
        'patient/*.write',
        'system/*.read',
        'system/*.write',
        'openid',
        'fhirUser',
        'launch',
        'launch/patient',
        'online_access',
        'offline_access',
      ],
      capabilities: [
        'launch-ehr',
        'launch-standalone',
        'client-public',
        'client-confidential-asymmetric',
        'context-ehr-patient',
        'context-ehr-encounter',
        'sso-openid-connect',
        'permission-v1',
      ],
    };
  }

  /** One RSA key, no `kid` (some EHRs publish exactly this; clients must not require a kid). */
  jwks() {
    const { kty, n, e } = this.keys.publicKey.export({ format: 'jwk' });
    return { keys: [{ kty, n, e, alg: 'RS256', use: 'sig' }] };
  }

  registerClient({ client_id, redirect_uris = [], scope = '', jwks_url }) {
    if (!client_id) return { status: 400, body: { error: 'client_id is required' } };
    this.clients.set(client_id, { client_id, redirect_uris, scopes: splitScope(scope), jwks_url });
    return { status: 201, body: { client_id } };
  }

  createLaunch({ patient, encounter, user, appContext }) {
    if (!patient || !user) return { status: 400, body: { error: 'patient and user are required' } };
    if (appContext !== undefined && typeof appContext !== 'string')
      return { status: 400, body: { error: 'appContext is a string' } };
    const launch = random();
    this.launches.set(launch, { patient, encounter, user: bare(user), appContext, expires: Date.now() + LAUNCH_TTL });
    return { status: 201, body: { launch } };
  }

  setStandalone({ patient, user }) {
    this.standalone = { patient, user: user && bare(user) };
    return { status: 200, body: this.standalone };
  }

  mint({ clientId, scopes, patient, encounter, user, seconds = TOKEN_SECONDS }) {
    const token = random();
    this.tokens.set(token, { clientId, scopes, patient, encounter, user, expires: Date.now() + seconds * 1000 });
    return token;
  }

  /** A token for the tests themselves (seeding and reading data); v1 scopes as for anyone else. */
  controlToken({ scope, patient }) {
    const scopes = splitScope(scope).filter(isV1);
    if (scopes.some((s) => s.startsWith('patient/')) && !patient)
      return { status: 400, body: { error: 'patient/ scopes need a patient' } };
    return {
      status: 201,
      body: { access_token: this.mint({ clientId: '_control', scopes, patient }), scope: scopes.join(' ') },
    };
  }

  /** The access token record for an Authorization header, or undefined (missing, unknown, expired). */
  bearer(header) {
    const match = /^Bearer\s+(\S+)$/i.exec(header ?? '');
    const record = match && this.tokens.get(match[1]);
    return record && record.expires > Date.now() ? record : undefined;
  }

  /** GET /auth/authorize: auto-approved like the launcher's simulated login; returns a redirect or a 400 page. */
  async authorize(q) {
    const client = this.clients.get(q.client_id);
    if (!client) return { status: 400, body: { error: 'invalid_client', error_description: 'unknown client_id' } };
    if (!q.redirect_uri || !client.redirect_uris.includes(q.redirect_uri)) {
      return {
        status: 400,
        body: { error: 'invalid_request', error_description: 'redirect_uri is not registered for this client' },
      };
    }
    const back = (params) => ({
      status: 302,
      headers: { Location: withQuery(q.redirect_uri, { ...params, state: q.state }) },
    });
    const fail = (error, description) => back({ error, error_description: description });
    if (q.response_type !== 'code') return fail('unsupported_response_type', 'response_type must be code');
    if (q.aud !== this.fhirBase) return fail('invalid_request', `aud must be the FHIR base ${this.fhirBase}`);
    if (!q.code_challenge || q.code_challenge_method !== 'S256')
      return fail('invalid_request', 'PKCE with S256 is required');

    const asked = splitScope(q.scope);
    let context;
    if (q.launch) {
      const launch = this.launches.get(q.launch);
      if (!launch || launch.expires < Date.now()) return fail('invalid_request', 'unknown or expired launch');
      context = launch;
    } else if (asked.includes('launch')) {
      return fail('invalid_request', 'the launch scope needs a launch parameter');
    } else {
      context = { user: this.standalone.user };
      if (asked.includes('launch/patient')) context.patient = this.standalone.patient ?? (await this.onlyPatient());
      if (asked.includes('launch/patient') && !context.patient) return fail('invalid_request', 'no patient to pick');
    }
    // v1 scopes only, and only what the client is registered for (resource scopes); v2 scopes just disappear.
    const granted = asked
      .filter(isV1)
      .filter((s) => !resourceScope(s) || !client.scopes.length || client.scopes.some((r) => covers(r, s)));
    if (granted.some((s) => s.startsWith('patient/')) && !context.patient)
      return fail('invalid_scope', 'patient/ scopes without a patient');

    const code = random();
    const { patient, encounter, user, appContext } = context;
    this.codes.set(code, {
      clientId: client.client_id,
      redirectUri: q.redirect_uri,
      challenge: q.code_challenge,
      nonce: q.nonce,
      scopes: granted,
      patient,
      encounter,
      user,
      appContext,
      expires: Date.now() + CODE_TTL,
    });
    return back({ code });
  }

  /** POST /auth/token (form fields already parsed). */
  async token(form) {
    if (form.grant_type === 'authorization_code') return this.codeGrant(form);
    if (form.grant_type === 'client_credentials') return this.backendGrant(form);
    if (form.grant_type === 'refresh_token') return this.refreshGrant(form);
    return oauthError(400, 'unsupported_grant_type', `grant_type ${form.grant_type} is not supported`);
  }

  /** The client making a token request: public (client_id) or confidential-asymmetric (client_assertion). */
  async authenticate(form) {
    if (form.client_assertion || form.client_assertion_type) {
      if (form.client_assertion_type !== JWT_BEARER)
        return { error: oauthError(400, 'invalid_request', `client_assertion_type must be ${JWT_BEARER}`) };
      return this.verifyAssertion(form.client_assertion ?? '');
    }
    const client = this.clients.get(form.client_id);
    if (!client) return { error: oauthError(401, 'invalid_client', 'unknown client_id') };
    if (client.jwks_url)
      return { error: oauthError(401, 'invalid_client', 'this client must authenticate with private_key_jwt') };
    return { client };
  }

  async codeGrant(form) {
    const { client, error } = await this.authenticate(form);
    if (error) return error;
    const grant = this.codes.get(form.code);
    this.codes.delete(form.code); // single use, even when this attempt fails
    if (!grant || grant.expires < Date.now() || grant.clientId !== client.client_id)
      return oauthError(400, 'invalid_grant', 'unknown, used or expired code');
    if (form.redirect_uri !== grant.redirectUri)
      return oauthError(400, 'invalid_grant', 'redirect_uri does not match the authorization request');
    if (!form.code_verifier || s256(form.code_verifier) !== grant.challenge)
      return oauthError(400, 'invalid_grant', 'PKCE code_verifier does not match');

    const { scopes, patient, encounter, user, appContext } = grant;
    const body = {
      access_token: this.mint({ clientId: client.client_id, scopes, patient, encounter, user }),
      token_type: 'Bearer',
      expires_in: TOKEN_SECONDS,
      scope: scopes.join(' '),
      need_patient_banner: true,
    };
    if (patient) body.patient = patient;
    if (encounter) body.encounter = encounter;
    if (appContext !== undefined) body.appContext = appContext;
    if (scopes.includes('openid') && scopes.includes('fhirUser') && user)
      body.id_token = this.idToken(client.client_id, user, grant.nonce);
    if (scopes.includes('offline_access') || scopes.includes('online_access')) {
      body.refresh_token = random();
      this.refreshTokens.set(body.refresh_token, { clientId: client.client_id, scopes, patient, encounter, user });
    }
    return { status: 200, body };
  }

  async refreshGrant(form) {
    const { client, error } = await this.authenticate(form);
    if (error) return error;
    const grant = this.refreshTokens.get(form.refresh_token);
    if (!grant || grant.clientId !== client.client_id) return oauthError(400, 'invalid_grant', 'unknown refresh_token');
    const body = {
      access_token: this.mint(grant),
      token_type: 'Bearer',
      expires_in: TOKEN_SECONDS,
      scope: grant.scopes.join(' '),
    };
    return {
      status: 200,
      body: { ...body, refresh_token: form.refresh_token, patient: grant.patient, encounter: grant.encounter },
    };
  }

  /** SMART Backend Services: v1 `system/` scopes the client is registered for; anything else asked is dropped. */
  async backendGrant(form) {
    if (form.client_assertion_type !== JWT_BEARER)
      return oauthError(400, 'invalid_request', `client_assertion_type must be ${JWT_BEARER}`);
    const { client, error } = await this.verifyAssertion(form.client_assertion ?? '');
    if (error) return error;
    const scopes = splitScope(form.scope).filter(
      (s) => resourceScope(s)?.context === 'system' && client.scopes.some((r) => covers(r, s)),
    );
    if (!scopes.length)
      return oauthError(400, 'invalid_scope', `no grantable SMART v1 system/ scope in "${form.scope ?? ''}"`);
    const access_token = this.mint({ clientId: client.client_id, scopes, seconds: BACKEND_TOKEN_SECONDS });
    return {
      status: 200,
      body: { access_token, token_type: 'Bearer', expires_in: BACKEND_TOKEN_SECONDS, scope: scopes.join(' ') },
    };
  }

  /** A private_key_jwt client assertion (RS384 or ES384), checked against the client's registered jwks_url. */
  async verifyAssertion(assertion) {
    const refuse = (text) => ({ error: oauthError(401, 'invalid_client', text) });
    const parts = assertion.split('.');
    let header, claims;
    try {
      [header, claims] = [unb64json(parts[0]), unb64json(parts[1])];
    } catch {
      return refuse('client_assertion is not a JWT');
    }
    if (parts.length !== 3 || !['RS384', 'ES384'].includes(header.alg))
      return refuse('client_assertion must be a JWT signed RS384 or ES384');
    const client = this.clients.get(claims.iss);
    if (!client?.jwks_url) return refuse('unknown client, or no jwks_url registered for it');
    if (claims.sub !== claims.iss) return refuse('iss and sub must both be the client_id');
    if (![claims.aud].flat().includes(this.tokenEndpoint)) return refuse(`aud must be ${this.tokenEndpoint}`);
    if (typeof claims.exp !== 'number' || claims.exp * 1000 <= Date.now())
      return refuse('client_assertion expired (or has no exp)');
    if (!claims.jti || this.usedJti.has(`${claims.iss} ${claims.jti}`)) return refuse('jti missing or already used');

    let keys;
    try {
      const answer = await fetch(client.jwks_url, { signal: AbortSignal.timeout(5000) });
      keys = (await answer.json()).keys ?? [];
    } catch (err) {
      return refuse(`could not fetch the client's JWKS: ${err.message}`);
    }
    const candidates = header.kid ? keys.filter((k) => k.kid === header.kid) : keys;
    if (candidates.length !== 1)
      return refuse(header.kid ? `no key with kid ${header.kid}` : 'no kid, and the JWKS has more than one key');
    let valid = false;
    try {
      const key = crypto.createPublicKey({ key: candidates[0], format: 'jwk' });
      const signed = Buffer.from(`${parts[0]}.${parts[1]}`);
      const verifier = header.alg === 'ES384' ? { key, dsaEncoding: 'ieee-p1363' } : key;
      valid = crypto.verify('sha384', signed, verifier, Buffer.from(parts[2], 'base64url'));
    } catch {
      valid = false;
    }
    if (!valid) return refuse('client_assertion signature does not verify');
    this.usedJti.add(`${claims.iss} ${claims.jti}`);
    return { client };
  }

  /** RS256, header exactly {"alg":"RS256","typ":"JWT"} — no kid. */
  idToken(clientId, user, nonce) {
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      iss: this.fhirBase,
      sub: user,
      aud: clientId,
      iat: now,
      exp: now + TOKEN_SECONDS,
      fhirUser: `${this.fhirBase}/Practitioner/${user}`,
      ...(nonce ? { nonce } : {}),
    };
    const signing = `${b64json({ alg: 'RS256', typ: 'JWT' })}.${b64json(claims)}`;
    return `${signing}.${crypto.sign('sha256', Buffer.from(signing), this.keys.privateKey).toString('base64url')}`;
  }
}

const bare = (user) => String(user).replace(/^Practitioner\//, '');

function withQuery(url, params) {
  const target = new URL(url);
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) target.searchParams.set(k, v);
  return target.toString();
}
