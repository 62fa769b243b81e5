// compare.mjs: compatibility test of the edge proxy with the Flagsmith Node SDK.
//
// The same environment document is evaluated three ways, all through the proxy at PROXY_URL:
//   remote/server  flagsmith-nodejs in remote mode with SERVER_KEY (GET flags/, POST identities/)
//   remote/client  the same with CLIENT_KEY
//   local          flagsmith-nodejs local evaluation with SERVER_KEY, from the document the
//                  proxy serves at GET environment-document/
// and the flags must agree: for the environment and for every identity in IDENTITIES_FILE,
// the same feature names in the same order, and per feature the same id, enabled and value
// (JSON type included). The remote/server identity requests are also repeated in the SDK's
// transient forms (transient=true, and per-trait {value, transient}), which must not change
// the flags. The SDK does not read "variant", so its raw identities answers (taken from its
// own fetch) are checked against its local evaluation: each flag carries "variant" right after
// "feature_state_value": the chosen option's key (null when it has none) where the local
// reason is a split, "control" where the flag that decided has options but none was chosen,
// null otherwise.
//
// Environment:
//   PROXY_URL        e.g. http://127.0.0.1:8123/api/v1/ (a missing trailing slash is added)
//   CLIENT_KEY       the environment's client-side key
//   SERVER_KEY       its server-side key (ser.…)
//   IDENTITIES_FILE  JSON array of {"identifier": "…", "traits": {"key": value}}
//
// Exit status: 0 all agree; 1 a mismatch or a failed request during the comparison;
// 2 setup problem (missing variable, bad identities file, proxy unreachable, a document the
// comparison cannot be run on, or nothing compared).
//
// The document must be one on which the SDK's local evaluation agrees with Flagsmith's
// Python engine (see README.md); the proxy follows the Python engine.

import fs from 'node:fs';
import { Flagsmith } from 'flagsmith-nodejs';

const EXIT_OK = 0;
const EXIT_MISMATCH = 1;
const EXIT_SETUP = 2;

class SetupError extends Error {}

// quietLogger keeps the SDK's pino JSON lines out of the report; warnings and errors still
// reach stderr.
const quietLogger = {
  level: 'warn',
  trace() {},
  debug() {},
  info() {},
  warn: (...args) => console.error('[flagsmith-nodejs warn]', ...args.map(describe)),
  error: (...args) => console.error('[flagsmith-nodejs error]', ...args.map(describe)),
  fatal: (...args) => console.error('[flagsmith-nodejs fatal]', ...args.map(describe)),
  child() {
    return quietLogger;
  },
};

function describe(x) {
  if (x instanceof Error) return errorText(x);
  return typeof x === 'string' ? x : JSON.stringify(x);
}

// errorText flattens an error and its causes: the SDK wraps fetch failures
// ("fetch failed" ← ECONNREFUSED) and HTTP statuses in generic messages.
function errorText(err) {
  const parts = [];
  for (let e = err, depth = 0; e && depth < 6; e = e.cause, depth++) {
    parts.push(e instanceof Error ? `${e.name}: ${e.message}` : String(e));
  }
  return parts.join(' <- ');
}

function requireEnv(name) {
  const v = process.env[name];
  if (!v) throw new SetupError(`environment variable ${name} is required`);
  return v;
}

function loadIdentities(path) {
  let list;
  try {
    list = JSON.parse(fs.readFileSync(path, 'utf8'));
  } catch (err) {
    throw new SetupError(`IDENTITIES_FILE ${path}: ${err.message}`);
  }
  if (!Array.isArray(list) || list.length === 0) {
    throw new SetupError(`IDENTITIES_FILE ${path}: want a non-empty JSON array of {identifier, traits}`);
  }
  const seen = new Set();
  list.forEach((item, i) => {
    if (!item || typeof item.identifier !== 'string' || item.identifier === '') {
      throw new SetupError(`IDENTITIES_FILE ${path}: item ${i}: "identifier" must be a non-empty string`);
    }
    if (item.traits === undefined) item.traits = {};
    if (item.traits === null || typeof item.traits !== 'object' || Array.isArray(item.traits)) {
      throw new SetupError(`IDENTITIES_FILE ${path}: item ${i}: "traits" must be an object`);
    }
    // The local client keeps one mutable model per identity that has overrides and merges
    // each call's traits into it, so an identifier evaluated twice would carry traits over.
    if (seen.has(item.identifier)) {
      throw new SetupError(`IDENTITIES_FILE ${path}: identifier ${JSON.stringify(item.identifier)} appears twice`);
    }
    seen.add(item.identifier);
  });
  return list;
}

// snapshot turns an SDK Flags object into plain, comparable data, keeping the feature order.
// A remote flag whose feature_state_value is null reads as undefined in the SDK
// (`feature_state_value ?? value`) while a local one reads as null: both become null.
function snapshot(flags) {
  return flags.allFlags().map(f => ({
    name: f.featureName,
    id: f.featureId,
    enabled: f.enabled,
    value: f.value === undefined ? null : f.value,
    reason: f.reason,
  }));
}

// variantRule reads, from the document, what a flag's variant must be given the local
// evaluation's value and reason (see the top of this file).
function variantRule(doc) {
  const options = new Map(); // feature name -> [{value, key}] of every feature state
  const withOptions = new Set(); // "<segment name or empty>\0<feature name>" with options
  const add = (segment, fs) => {
    const mv = fs.multivariate_feature_state_values ?? [];
    if (mv.length === 0) return;
    withOptions.add(`${segment}\0${fs.feature.name}`);
    const list = options.get(fs.feature.name) ?? [];
    for (const m of mv) list.push({ value: m.multivariate_feature_option.value, key: m.multivariate_feature_option.key ?? null });
    options.set(fs.feature.name, list);
  };
  for (const fs of doc.feature_states) add('', fs);
  for (const seg of doc.project.segments ?? []) for (const fs of seg.feature_states ?? []) add(seg.name, fs);
  return (name, local) => {
    if (local.reason?.startsWith('SPLIT')) {
      const hits = (options.get(name) ?? []).filter(o => JSON.stringify(o.value) === JSON.stringify(local.value));
      if (hits.length !== 1) throw new SetupError(`feature ${name}: split value ${show(local.value)} names ${hits.length} options`);
      return hits[0].key;
    }
    const segment = /^TARGETING_MATCH; segment=(.*)$/.exec(local.reason ?? '')?.[1] ?? '';
    return withOptions.has(`${segment}\0${name}`) ? 'control' : null;
  };
}

// checkVariants compares an identities answer's variants with the rule's, counting each kind.
function checkVariants(answer, local, rule, seen) {
  const lines = [];
  const byName = new Map(local.map(f => [f.name, f]));
  for (const flag of answer.flags) {
    const name = flag.feature.name;
    const keys = Object.keys(flag);
    if (keys.indexOf('variant') !== keys.indexOf('feature_state_value') + 1) {
      lines.push(`feature ${JSON.stringify(name)}: fields ${keys.join(', ')}; want variant right after feature_state_value`);
      continue;
    }
    const want = rule(name, byName.get(name));
    if (flag.variant !== want) lines.push(`feature ${JSON.stringify(name)}: variant ${show(flag.variant)}, want ${show(want)}`);
    const split = byName.get(name).reason?.startsWith('SPLIT');
    seen[want === 'control' ? 'control' : want !== null ? 'key' : split ? 'unkeyed option' : 'none']++;
  }
  return lines;
}

function show(v) {
  return v === undefined ? '(absent)' : JSON.stringify(v);
}

// diff compares two snapshots and returns human-readable mismatch lines.
function diff(want, got, wantLabel, gotLabel) {
  const lines = [];
  const w = new Map(want.map(f => [f.name, f]));
  const g = new Map(got.map(f => [f.name, f]));
  for (const name of w.keys()) {
    if (!g.has(name)) lines.push(`feature ${JSON.stringify(name)}: missing from ${gotLabel}`);
  }
  for (const name of g.keys()) {
    if (!w.has(name)) lines.push(`feature ${JSON.stringify(name)}: missing from ${wantLabel}`);
  }
  for (const [name, a] of w) {
    const b = g.get(name);
    if (!b) continue;
    for (const field of ['id', 'enabled', 'value']) {
      // JSON text compares type and value: 1 vs "1" vs true differ, as do 0.3 and 0.30000000000000004.
      if (JSON.stringify(a[field]) !== JSON.stringify(b[field])) {
        lines.push(`feature ${JSON.stringify(name)}: ${field} ${wantLabel}=${show(a[field])} ${gotLabel}=${show(b[field])}`);
      }
    }
  }
  // JavaScript objects list integer-like keys first, so the SDK cannot keep document order
  // for such feature names; compare the order only when no name is one.
  if ([...w.keys(), ...g.keys()].some(n => /^(0|[1-9][0-9]*)$/.test(n))) return lines;
  const wOrder = want.map(f => f.name).filter(n => g.has(n));
  const gOrder = got.map(f => f.name).filter(n => w.has(n));
  if (wOrder.join('\u0000') !== gOrder.join('\u0000')) {
    lines.push(`feature order differs:\n      ${wantLabel}: ${wOrder.join(', ')}\n      ${gotLabel}: ${gOrder.join(', ')}`);
  }
  return lines;
}

// transientTraits is the SDK's per-trait transient form: {key: {value, transient: true}}.
function transientTraits(traits) {
  return Object.fromEntries(Object.entries(traits).map(([k, v]) => [k, { value: v, transient: true }]));
}

async function fetchDocument(apiUrl, serverKey) {
  let res;
  try {
    res = await fetch(`${apiUrl}environment-document/`, {
      headers: { 'X-Environment-Key': serverKey, Accept: 'application/json' },
      signal: AbortSignal.timeout(10000),
    });
  } catch (err) {
    throw new SetupError(`GET ${apiUrl}environment-document/: ${errorText(err)}`);
  }
  const body = await res.text();
  if (res.status !== 200) {
    throw new SetupError(`GET ${apiUrl}environment-document/: status ${res.status}: ${body.slice(0, 300)}`);
  }
  try {
    return JSON.parse(body);
  } catch (err) {
    throw new SetupError(`GET ${apiUrl}environment-document/: invalid JSON: ${err.message}`);
  }
}

async function main() {
  let apiUrl = requireEnv('PROXY_URL');
  if (!apiUrl.endsWith('/')) apiUrl += '/'; // the SDK appends "flags/", "identities/", "environment-document/"
  const clientKey = requireEnv('CLIENT_KEY');
  const serverKey = requireEnv('SERVER_KEY');
  const identities = loadIdentities(requireEnv('IDENTITIES_FILE'));
  if (!serverKey.startsWith('ser.')) throw new SetupError('SERVER_KEY must start with "ser."');

  // Preconditions on the document the proxy serves: the client key must see every flag.
  const doc = await fetchDocument(apiUrl, serverKey);
  const serverOnly = doc?.project?.server_key_only_feature_ids ?? [];
  if (serverOnly.length > 0 || doc?.project?.hide_disabled_flags === true) {
    throw new SetupError(
      'the document has server_key_only_feature_ids or project.hide_disabled_flags; ' +
        'client-key and server-key flags would differ by design, so this comparison cannot run on it',
    );
  }

  // The remote/server client's raw identities answers, by identifier (its first request).
  const answers = new Map();
  const recordingFetch = async (url, init) => {
    const res = await fetch(url, init);
    if (init?.method === 'POST' && String(url).endsWith('identities/') && res.status === 200) {
      const answer = await res.clone().json();
      if (!answers.has(answer.identifier)) answers.set(answer.identifier, answer);
    }
    return res;
  };

  // No defaultFlagHandler: a failed request must throw, not turn into empty flags.
  const common = {
    apiUrl,
    requestTimeoutSeconds: 10,
    retries: 1,
    requestRetryDelayMilliseconds: 250,
    enableAnalytics: false,
    logger: quietLogger,
  };
  const remoteServer = new Flagsmith({ ...common, environmentKey: serverKey, fetch: recordingFetch });
  const remoteClient = new Flagsmith({ ...common, environmentKey: clientKey });
  // environmentRefreshIntervalSeconds: no refresh during the run (0 would mean the default 60).
  const local = new Flagsmith({
    ...common,
    environmentKey: serverKey,
    enableLocalEvaluation: true,
    environmentRefreshIntervalSeconds: 3600,
  });
  const clients = [remoteServer, remoteClient, local];

  try {
    return await compareAll({ apiUrl, identities, remoteServer, remoteClient, local, answers, variantOf: variantRule(doc) });
  } finally {
    await Promise.all(clients.map(c => c.close()));
  }
}

async function compareAll({ apiUrl, identities, remoteServer, remoteClient, local, answers, variantOf }) {
  // Setup: everything must be reachable before anything is compared.
  let environment;
  try {
    environment = await local.getEnvironment(); // GET environment-document/, throws on failure
  } catch (err) {
    throw new SetupError(`local evaluation client could not load ${apiUrl}environment-document/: ${errorText(err)}`);
  }
  const docFeatures = environment.featureStates.length;
  if (docFeatures === 0) throw new SetupError('the environment document has no feature_states: nothing to compare');

  // Identities with overrides are kept as mutable models in the local client, and a falsy
  // trait value (false, 0, "") passed for one deletes the trait there instead of setting it.
  const overridden = local.identitiesWithOverridesByIdentifier ?? new Map();
  for (const { identifier, traits } of identities) {
    if (!overridden.has(identifier)) continue;
    const falsy = Object.entries(traits).filter(([, v]) => !v).map(([k]) => k);
    if (falsy.length > 0) {
      throw new SetupError(
        `identity ${JSON.stringify(identifier)} has identity overrides and falsy trait(s) ${falsy.join(', ')}: ` +
          'the SDK drops those in local evaluation, so the comparison would be meaningless',
      );
    }
  }

  const env = {};
  for (const [label, client] of [['remote/server', remoteServer], ['remote/client', remoteClient], ['local', local]]) {
    try {
      env[label] = snapshot(await client.getEnvironmentFlags());
    } catch (err) {
      throw new SetupError(`${label}: environment flags from ${apiUrl}: ${errorText(err)}`);
    }
  }

  const mismatches = [];
  const errors = [];
  let flagsCompared = 0;
  let comparisons = 0;
  const check = (subject, wantLabel, want, gotLabel, got) => {
    comparisons++;
    flagsCompared += Math.max(want.length, got.length);
    const lines = diff(want, got, wantLabel, gotLabel);
    if (lines.length > 0) mismatches.push({ subject, pair: `${wantLabel} vs ${gotLabel}`, lines });
  };

  check('environment flags', 'remote/server', env['remote/server'], 'local', env.local);
  check('environment flags', 'remote/server', env['remote/server'], 'remote/client', env['remote/client']);
  if (env.local.length !== docFeatures) {
    errors.push(`environment flags: local evaluation gave ${env.local.length} flags for a document with ${docFeatures} feature_states`);
  }

  let identitiesCompared = 0;
  const variants = { key: 0, control: 0, 'unkeyed option': 0, none: 0 };
  for (const { identifier, traits } of identities) {
    const subject = `identity ${JSON.stringify(identifier)} traits=${JSON.stringify(traits)}`;
    const get = async (label, fn) => {
      try {
        return snapshot(await fn());
      } catch (err) {
        errors.push(`${subject}: ${label}: ${errorText(err)}`);
        return undefined;
      }
    };
    const server = await get('remote/server', () => remoteServer.getIdentityFlags(identifier, traits));
    const loc = await get('local', () => local.getIdentityFlags(identifier, traits));
    const client = await get('remote/client', () => remoteClient.getIdentityFlags(identifier, traits));
    const transient = await get('remote/server transient=true', () => remoteServer.getIdentityFlags(identifier, traits, true));
    const traitTransient = await get('remote/server per-trait transient', () =>
      remoteServer.getIdentityFlags(identifier, transientTraits(traits)),
    );
    if (!server) continue;
    if (loc) check(subject, 'remote/server', server, 'local', loc);
    if (loc) {
      const lines = checkVariants(answers.get(identifier), loc, variantOf, variants);
      if (lines.length > 0) mismatches.push({ subject, pair: 'identities answer variant vs local evaluation', lines });
    }
    if (client) check(subject, 'remote/server', server, 'remote/client', client);
    if (transient) check(subject, 'remote/server', server, 'remote/server transient=true', transient);
    if (traitTransient) check(subject, 'remote/server', server, 'remote/server per-trait transient', traitTransient);
    if (loc) identitiesCompared++;
  }

  for (const m of mismatches) {
    console.log(`MISMATCH ${m.subject} (${m.pair}):`);
    for (const line of m.lines) console.log(`    ${line}`);
  }
  for (const e of errors) console.log(`ERROR ${e}`);

  if (flagsCompared === 0 || (identitiesCompared === 0 && errors.length === 0)) {
    throw new SetupError('nothing was compared (no flags or no identities): a test that cannot fail proves nothing');
  }
  if (errors.length === 0 && mismatches.length === 0 && Object.values(variants).some(n => n === 0)) {
    throw new SetupError(`the document and identities do not show every kind of variant: ${JSON.stringify(variants)}`);
  }
  const summary =
    `compared ${flagsCompared} flags in ${comparisons} comparisons: environment (${env.local.length} flags) ` +
    `and ${identitiesCompared}/${identities.length} identities; variants ${JSON.stringify(variants)}; ` +
    `${mismatches.length} mismatching comparisons, ${errors.length} errors`;
  if (mismatches.length > 0 || errors.length > 0) {
    console.log(`FAIL: ${summary}`);
    return EXIT_MISMATCH;
  }
  console.log(`OK: ${summary}`);
  return EXIT_OK;
}

let code;
try {
  code = await main();
} catch (err) {
  if (err instanceof SetupError) {
    console.error(`compare.mjs: ${err.message}`);
    code = EXIT_SETUP;
  } else {
    console.error(`compare.mjs: unexpected error: ${errorText(err)}`);
    if (err?.stack) console.error(err.stack);
    code = EXIT_SETUP;
  }
}
// Exit explicitly: idle keep-alive sockets in fetch must not hold the process open.
process.exit(code);
