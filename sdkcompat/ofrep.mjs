// ofrep.mjs: OpenFeature compatibility test of the edge proxy's OFREP endpoints, with the real
// OpenFeature SDKs and OFREP providers (pinned in package.json):
//   server  @openfeature/server-sdk + @openfeature/ofrep-provider (one request per evaluation)
//   web     @openfeature/web-sdk + @openfeature/ofrep-web-provider, run in Node (bulk evaluation,
//           ETag, eventStreams), with polling off
// For the environment and for every identity in IDENTITIES_FILE (as targetingKey plus traits),
// with the client key and with the server key, each provider resolves every flag with the
// getter of its type (boolean for flags whose value is null, string, number, object), and the
// answers must equal the proxy's own answers to POST /api/v1/identities/ (GET /api/v1/flags/ for
// the environment) for the same identity and key: an enabled flag resolves to its value (true
// for a null value), a disabled one to the caller's default, a flag the key may not see is
// FLAG_NOT_FOUND. Then the web provider must pick up a document change (DOCUMENT_FILE
// rewritten) through the event stream alone, and re-ask with If-None-Match for a 304.
//
// Environment: PROXY_URL (base URL), CLIENT_KEY, SERVER_KEY, IDENTITIES_FILE, DOCUMENT_FILE
// (the file the proxy serves the environment from; the test rewrites it).
// Exit status: 0 pass, 1 a difference or failed check, 2 setup problem.

import fs from 'node:fs';
import { EventSource as NodeEventSource } from 'eventsource';
import { OpenFeature as ServerOpenFeature } from '@openfeature/server-sdk';
import { OFREPProvider } from '@openfeature/ofrep-provider';
import { OpenFeature as WebOpenFeature, ProviderEvents } from '@openfeature/web-sdk';
import { OFREPWebProvider } from '@openfeature/ofrep-web-provider';

const EXIT_OK = 0;
const EXIT_FAIL = 1;
const EXIT_SETUP = 2;

class SetupError extends Error {}

function requireEnv(name) {
  const v = process.env[name];
  if (!v) throw new SetupError(`environment variable ${name} is required`);
  return v;
}

const baseUrl = requireEnv('PROXY_URL').replace(/\/+$/, '');
const clientKey = requireEnv('CLIENT_KEY');
const serverKey = requireEnv('SERVER_KEY');
const identities = JSON.parse(fs.readFileSync(requireEnv('IDENTITIES_FILE'), 'utf8'));
const documentFile = requireEnv('DOCUMENT_FILE');

// The web provider needs EventSource, which Node (as of 20 and 22) lacks: the `eventsource`
// package is the WHATWG one. Counting its messages shows that updates arrive through the stream.
let streamMessages = 0;
globalThis.EventSource = class extends NodeEventSource {
  constructor(url, init) {
    super(url, init);
    this.addEventListener('message', () => streamMessages++);
  }
};

// Every request the providers make, with its answer's status.
const requests = [];
function recordingFetch(input, init) {
  const req = input instanceof Request ? input : new Request(input, init);
  return fetch(input, init).then((res) => {
    requests.push({ method: req.method, url: req.url, status: res.status, ifNoneMatch: req.headers.get('If-None-Match') });
    return res;
  });
}

const quietLogger = { error() {}, warn() {}, info() {}, debug() {} };

// expectedFlags is the proxy's own answer for an identity (null: the environment) and key:
// name → {enabled, value} for the flags the key may see.
async function expectedFlags(key, identity) {
  const headers = { 'X-Environment-Key': key, 'Content-Type': 'application/json' };
  const res = identity
    ? await fetch(`${baseUrl}/api/v1/identities/`, {
        method: 'POST',
        headers,
        body: JSON.stringify({
          identifier: identity.identifier,
          traits: Object.entries(identity.traits).map(([trait_key, trait_value]) => ({ trait_key, trait_value })),
        }),
      })
    : await fetch(`${baseUrl}/api/v1/flags/`, { headers });
  if (res.status !== 200) throw new SetupError(`${res.url}: status ${res.status}: ${await res.text()}`);
  const body = await res.json();
  const list = identity ? body.flags : body;
  return new Map(list.map((f) => [f.feature.name, { enabled: f.enabled, value: f.feature_state_value, variant: f.variant }]));
}

// typeOf picks the OpenFeature getter for a flag value.
function typeOf(value) {
  if (value === null || typeof value === 'boolean') return 'boolean';
  if (typeof value === 'string') return 'string';
  if (typeof value === 'number') return 'number';
  return 'object';
}

// Defaults no flag of the test document has, so a resolved default is recognisable (booleans
// have no such value: the reason and metadata tell a default from a value there).
const defaults = { boolean: false, string: '<code default>', number: -987654321, object: { codeDefault: true } };

async function resolve(client, type, flag, context) {
  switch (type) {
    case 'boolean':
      return client.getBooleanDetails(flag, defaults.boolean, context);
    case 'string':
      return client.getStringDetails(flag, defaults.string, context);
    case 'number':
      return client.getNumberDetails(flag, defaults.number, context);
    default:
      return client.getObjectDetails(flag, defaults.object, context);
  }
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

// check compares one resolution with the proxy's identities answer for that flag (undefined:
// the key may not see it) and returns the differences.
function check(details, want, type, provider) {
  const problems = [];
  if (want === undefined) {
    if (details.errorCode !== 'FLAG_NOT_FOUND' || !same(details.value, defaults[type])) {
      problems.push(`want FLAG_NOT_FOUND and the default, got value=${JSON.stringify(details.value)} errorCode=${details.errorCode}`);
    }
    return problems;
  }
  if (want.enabled) {
    const value = want.value === null ? true : want.value;
    if (!same(details.value, value)) problems.push(`value ${JSON.stringify(details.value)}, want ${JSON.stringify(value)}`);
    if (details.errorCode) problems.push(`error ${details.errorCode}: ${details.errorMessage}`);
    if (details.flagMetadata?.enabled !== true) problems.push(`metadata.enabled ${details.flagMetadata?.enabled}, want true`);
    // The identities answer's variant (an option's key or "control"); OFREP leaves out a null one.
    if (details.variant !== (want.variant ?? undefined)) problems.push(`variant ${details.variant}, want ${want.variant}`);
    return problems;
  }
  if (want.value === null) {
    // A switched-off on/off flag answers false, a success for both providers.
    if (details.value !== false || details.reason !== 'DISABLED' || details.errorCode) {
      problems.push(`value ${JSON.stringify(details.value)}, reason ${details.reason}, error ${details.errorCode}; want false, DISABLED`);
    }
    return problems;
  }
  // Disabled: no value in the answer, so the caller's default applies.
  if (!same(details.value, defaults[type])) problems.push(`value ${JSON.stringify(details.value)} of a disabled flag, want the default`);
  if (provider === 'web') {
    // The web provider reads OFREP's value-less answer as "use the code default".
    if (details.reason !== 'DISABLED' || details.flagMetadata?.enabled !== false) {
      problems.push(`reason ${details.reason}, metadata.enabled ${details.flagMetadata?.enabled}; want DISABLED, false`);
    }
  } else if (details.reason !== 'DISABLED' && details.reason !== 'ERROR') {
    // @openfeature/ofrep-provider 0.1.3 (the newest on npm as of 2026-12) predates OFREP's
    // value-less answers and reports them as an error, with the default.
    problems.push(`reason ${details.reason}; want DISABLED (or ERROR from ofrep-provider 0.1.3)`);
  }
  return problems;
}

function contextOf(identity) {
  return identity ? { targetingKey: identity.identifier, ...identity.traits } : {};
}

async function compare(label, resolveAll, keys) {
  let flags = 0;
  const diffs = [];
  for (const key of keys) {
    const keyName = key === serverKey ? 'server key' : 'client key';
    // The server key sees every flag: its list names the flags to ask for with either key.
    for (const identity of [null, ...identities]) {
      const all = await expectedFlags(serverKey, identity);
      const want = key === serverKey ? all : await expectedFlags(key, identity);
      const subject = identity ? `identity ${JSON.stringify(identity.identifier)}` : 'environment';
      const got = await resolveAll(key, identity, [...all].map(([name, f]) => ({ name, type: typeOf(f.value) })));
      for (const [name, details] of got) {
        flags++;
        for (const p of check(details, want.get(name), typeOf(all.get(name).value), label)) {
          diffs.push(`${label} ${keyName} ${subject} ${name}: ${p}`);
        }
      }
      if (got.size !== all.size) diffs.push(`${label} ${keyName} ${subject}: resolved ${got.size} of ${all.size} flags`);
    }
  }
  return { flags, diffs };
}

async function serverResolveAll(key, identity, flags) {
  const domain = `server-${key}`;
  const client = ServerOpenFeature.getClient(domain);
  const out = new Map();
  for (const { name, type } of flags) out.set(name, await resolve(client, type, name, contextOf(identity)));
  return out;
}

async function webResolveAll(key, identity, flags) {
  const domain = `web-${key}`;
  await WebOpenFeature.setContext(domain, contextOf(identity));
  const client = WebOpenFeature.getClient(domain);
  const out = new Map();
  for (const { name, type } of flags) out.set(name, await resolve(client, type, name));
  return out;
}

function webProvider(key) {
  return new OFREPWebProvider({
    baseUrl,
    headers: [['X-Environment-Key', key]],
    pollInterval: 0, // no polling: changes must come through eventStreams
    cacheMode: 'disabled', // Node has no localStorage
    fetchImplementation: recordingFetch,
  });
}

function waitFor(what, ms, cond) {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + ms;
    const tick = () => {
      if (cond()) return resolve();
      if (Date.now() > deadline) return reject(new Error(`${what}: not within ${ms} ms`));
      setTimeout(tick, 25);
    };
    tick();
  });
}

// realtime changes a string flag in the document file and expects the web provider to
// resolve the new value after a stream message and a bulk re-fetch, with no polling, and then
// to get 304 for an unchanged answer.
async function realtime() {
  const problems = [];
  const domain = `web-${clientKey}`;
  const identity = identities.find((i) => Object.keys(i.traits).length > 0);
  await WebOpenFeature.setContext(domain, contextOf(identity));
  const client = WebOpenFeature.getClient(domain);
  const doc = JSON.parse(fs.readFileSync(documentFile, 'utf8'));
  // A string flag the identity gets the environment's value of, so changing that value
  // changes the identity's.
  const identityFlags = await expectedFlags(clientKey, identity);
  const fsState = doc.feature_states.find(
    (f) =>
      f.enabled &&
      typeof f.feature_state_value === 'string' &&
      f.multivariate_feature_state_values.length === 0 &&
      identityFlags.get(f.feature.name)?.value === f.feature_state_value,
  );
  if (!fsState) throw new SetupError(`no string flag keeps its environment value for ${identity.identifier}`);
  const flag = fsState.feature.name;
  const before = client.getStringValue(flag, defaults.string);
  if (before !== fsState.feature_state_value) throw new SetupError(`${flag} resolves to ${before}, not ${fsState.feature_state_value}`);
  const want = `${before} (changed at ${Date.now()})`;

  let configurationChanged = 0;
  client.addHandler(ProviderEvents.ConfigurationChanged, () => configurationChanged++);
  const messagesBefore = streamMessages;
  const requestsBefore = requests.length;
  const idleStart = Date.now();
  // A few quiet seconds first: with polling off, nothing may be fetched while nothing changes.
  await new Promise((r) => setTimeout(r, 2500));
  if (requests.length !== requestsBefore) problems.push(`${requests.length - requestsBefore} requests in ${Date.now() - idleStart} ms with no change: polling?`);

  fsState.feature_state_value = want;
  doc.updated_at = new Date().toISOString().replace('Z', '000Z');
  fs.writeFileSync(`${documentFile}.tmp`, JSON.stringify(doc));
  fs.renameSync(`${documentFile}.tmp`, documentFile);
  const start = Date.now();
  try {
    await waitFor('the new value through the event stream', 15000, () => client.getStringValue(flag, defaults.string) === want);
    console.log(`web provider: ${flag} = ${JSON.stringify(want)} ${Date.now() - start} ms after the document file changed`);
  } catch (err) {
    problems.push(`${err.message}: still ${JSON.stringify(client.getStringValue(flag, defaults.string))}`);
  }
  if (streamMessages === messagesBefore) problems.push('no message arrived on the event stream');
  if (configurationChanged === 0) problems.push('no PROVIDER_CONFIGURATION_CHANGED event');
  const refetch = requests.slice(requestsBefore).filter((r) => r.url.includes('/ofrep/v1/evaluate/flags'));
  if (refetch.length === 0 || refetch.some((r) => r.status !== 200 || !r.ifNoneMatch)) {
    problems.push(`re-fetches after the change: ${JSON.stringify(refetch)}; want 200s sent with If-None-Match`);
  }

  // The same context again: the provider re-asks with its ETag and the answer is unchanged.
  const n = requests.length;
  await WebOpenFeature.setContext(domain, { ...contextOf(identity) });
  const again = requests.slice(n);
  if (again.length !== 1 || again[0].status !== 304) problems.push(`unchanged re-fetch: ${JSON.stringify(again)}; want one 304`);
  if (client.getStringValue(flag, defaults.string) !== want) problems.push('the value changed after a 304');
  return problems;
}

async function main() {
  ServerOpenFeature.setLogger(quietLogger);
  WebOpenFeature.setLogger(quietLogger);
  for (const key of [clientKey, serverKey]) {
    await ServerOpenFeature.setProviderAndWait(
      `server-${key}`,
      new OFREPProvider({ baseUrl, headers: [['X-Environment-Key', key]], fetchImplementation: recordingFetch }),
    );
    await WebOpenFeature.setProviderAndWait(`web-${key}`, webProvider(key));
  }
  const web = WebOpenFeature.getClient(`web-${clientKey}`);
  if (web.providerStatus !== 'READY') throw new SetupError(`web provider status ${web.providerStatus}`);

  const results = [];
  results.push(await compare('server', serverResolveAll, [clientKey, serverKey]));
  results.push(await compare('web', webResolveAll, [clientKey, serverKey]));
  const flags = results.reduce((n, r) => n + r.flags, 0);
  const diffs = results.flatMap((r) => r.diffs);
  const types = new Set();
  for (const f of (await expectedFlags(serverKey, null)).values()) types.add(typeOf(f.value));
  if (!['boolean', 'string', 'number', 'object'].every((t) => types.has(t))) {
    throw new SetupError(`the document lacks a flag type: has ${[...types].join(', ')}`);
  }
  const streamProblems = await realtime();

  for (const d of diffs) console.log(`DIFF ${d}`);
  for (const p of streamProblems) console.log(`REALTIME ${p}`);
  if (flags === 0) throw new SetupError('nothing was compared');
  const summary = `${flags} OFREP resolutions (server and web providers, client and server keys, environment and ${identities.length} identities) against /api/v1/identities/: ${diffs.length} differences; realtime: ${streamProblems.length} problems`;
  console.log(`${diffs.length + streamProblems.length === 0 ? 'OK' : 'FAIL'}: ${summary}`);
  await Promise.all([ServerOpenFeature.close(), WebOpenFeature.close()]);
  return diffs.length + streamProblems.length === 0 ? EXIT_OK : EXIT_FAIL;
}

let code;
try {
  code = await main();
} catch (err) {
  console.error(`ofrep.mjs: ${err instanceof SetupError ? '' : 'unexpected error: '}${err.stack ?? err}`);
  code = EXIT_SETUP;
}
process.exit(code);
