// analytics.mjs: flag analytics through the edge proxy with Flagsmith's Node SDK
// (flagsmith-nodejs) and JS client SDK (flagsmith), both pinned in package.json and both with
// enableAnalytics: true. analytics.sh starts the fake Flagsmith (upstream.mjs) and the proxy,
// then runs this.
//
// Each SDK evaluates known flags a known number of times through the proxy and sends its
// analytics to the proxy with its own flush. The fake Flagsmith behind the proxy must then
// receive exactly those counts, per SDK (label set) and feature, once the proxy has flushed,
// and still exactly those after two more flush intervals (nothing sent twice); neither SDK may
// log a warning or an error, and each must have cleared its pending analytics (which it does
// only when the post succeeded). The proxy's /metrics must show received = forwarded.
//
// Exit status: 0 pass, 1 failure, 2 setup problem.
//
// Environment: PROXY_URL (e.g. http://127.0.0.1:8000), CLIENT_KEY, SERVER_KEY, UPSTREAM_URL (the
// fake Flagsmith, for GET /control/analytics), FLUSH_SECONDS (the proxy's
// analytics.flush_interval_seconds).

import { Flagsmith } from 'flagsmith-nodejs';

class SetupError extends Error {}

function env(name) {
    const v = process.env[name];
    if (!v) {
        throw new SetupError(`${name} is not set (run this through analytics.sh)`);
    }
    return v;
}

const log = (...args) => console.log('analytics:', ...args);
const failures = [];
function check(ok, message) {
    if (!ok) {
        failures.push(message);
        console.error(`analytics: FAIL: ${message}`);
    }
    return ok;
}

// Every warning or error an SDK logs; the test fails on any.
const sdkProblems = [];
const recordingLogger = {
    level: 'warn',
    trace() {},
    debug() {},
    info() {},
    warn: (...args) => sdkProblems.push(`flagsmith-nodejs warn: ${args.map(describe).join(' ')}`),
    error: (...args) => sdkProblems.push(`flagsmith-nodejs error: ${args.map(describe).join(' ')}`),
    fatal: (...args) => sdkProblems.push(`flagsmith-nodejs fatal: ${args.map(describe).join(' ')}`),
    child() {
        return recordingLogger;
    },
};

function describe(x) {
    if (x instanceof Error) return x.stack ?? String(x);
    if (typeof x === 'string') return x;
    try {
        return JSON.stringify(x);
    } catch {
        return String(x); // the JS client logs its state, which holds timers (circular)
    }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function equalCounts(a, b) {
    const ka = Object.keys(a).sort();
    const kb = Object.keys(b).sort();
    return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k] === b[k]);
}

// evaluate calls fn n times and adds n to want[feature].
function evaluate(want, feature, n, fn) {
    for (let i = 0; i < n; i++) {
        fn(feature);
    }
    want[feature] = (want[feature] ?? 0) + n;
}

async function nodeSDK(cfg) {
    const want = {};
    const common = { apiUrl: cfg.proxy + '/api/v1/', enableAnalytics: true, logger: recordingLogger, requestTimeoutSeconds: 10 };
    // Both keys: the proxy takes analytics with either, and sums them for the one environment.
    const server = new Flagsmith({ ...common, environmentKey: cfg.serverKey });
    const client = new Flagsmith({ ...common, environmentKey: cfg.clientKey });
    const envFlags = await server.getEnvironmentFlags();
    evaluate(want, 'dark_mode', 7, (f) => check(envFlags.isFeatureEnabled(f) === true, `node: ${f} is not enabled`));
    evaluate(want, 'banner_colour', 5, (f) => check(envFlags.getFeatureValue(f) === 'blue', `node: ${f} is not "blue"`));
    const idFlags = await server.getIdentityFlags('analytics-user', { plan: 'free' });
    evaluate(want, 'max_upload_mb', 3, (f) => idFlags.getFeatureValue(f));
    evaluate(want, 'banner_colour', 2, (f) => idFlags.isFeatureEnabled(f));
    const clientFlags = await client.getEnvironmentFlags();
    evaluate(want, 'search_backend', 4, (f) => clientFlags.getFeatureValue(f));

    // The SDK's own flush (it would run it on the next evaluation 10 s after the last one).
    for (const sdk of [server, client]) {
        await sdk.analyticsProcessor.flush();
        check(Object.keys(sdk.analyticsProcessor.analyticsData).length === 0,
            `node: analytics still pending in the SDK after its flush: ${JSON.stringify(sdk.analyticsProcessor.analyticsData)}`);
        await sdk.close();
    }
    return want;
}

async function jsClientSDK(cfg) {
    // The JS client is a browser SDK: it counts evaluations only where it can store them
    // (flagsmith-core: canUseStorage = typeof window !== 'undefined', AsyncStorage over
    // localStorage). Give it a browser's window and an in-memory localStorage before it loads.
    globalThis.window ??= {};
    if (typeof globalThis.localStorage === 'undefined') {
        const items = new Map();
        globalThis.localStorage = {
            getItem: (k) => (items.has(k) ? items.get(k) : null),
            setItem: (k, v) => void items.set(k, String(v)),
            removeItem: (k) => void items.delete(k),
        };
    }
    let createFlagsmithInstance;
    try {
        ({ createFlagsmithInstance } = await import('flagsmith/isomorphic'));
    } catch (err) {
        throw new SetupError(`cannot load flagsmith/isomorphic (npm ci?): ${err.message}`);
    }
    // With enableLogs the SDK reports a failed analytics post through console.log
    // ("Exception fetching evaluationEvent"); capture its log lines.
    const original = console.log;
    console.log = (...args) => {
        const text = args.map(describe).join(' ');
        if (/exception|fail/i.test(text)) {
            sdkProblems.push(`flagsmith (JS client): ${text}`);
        }
    };
    const sdk = createFlagsmithInstance();
    const want = {};
    try {
        await sdk.init({
            environmentID: cfg.clientKey,
            api: cfg.proxy + '/api/v1/',
            enableAnalytics: true,
            enableLogs: true,
            applicationMetadata: { name: 'sdkcompat-analytics', version: '1.0.0' },
        });
        // The SDK sets up its analytics store asynchronously after init.
        for (let i = 0; i < 50 && !sdk.evaluationEvent; i++) {
            await sleep(20);
        }
        if (!sdk.evaluationEvent) {
            throw new SetupError('the JS client did not set up its analytics store (evaluationEvent is null)');
        }
        evaluate(want, 'dark_mode', 4, (f) => check(sdk.hasFeature(f) === true, `js: ${f} is not enabled`));
        evaluate(want, 'welcome_message', 6, (f) => check(sdk.getValue(f) === 'Hello!', `js: ${f} is not "Hello!"`));
        // The SDK's own flush (it runs it every 10 s).
        await sdk.analyticsFlags();
        const pending = sdk.evaluationEvent?.[cfg.clientKey] ?? {};
        check(Object.keys(pending).length === 0, `js: analytics still pending in the SDK after its flush: ${JSON.stringify(pending)}`);
    } finally {
        clearInterval(sdk.analyticsInterval);
        console.log = original;
    }
    return want;
}

async function upstreamAnalytics(cfg) {
    const res = await fetch(cfg.upstream + '/control/analytics');
    if (!res.ok) {
        throw new SetupError(`GET /control/analytics = ${res.status}`);
    }
    return res.json();
}

async function proxyMetric(cfg, name) {
    const text = await (await fetch(cfg.proxy + '/metrics')).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name}{environment="${cfg.clientKey}"} `));
    return line ? Number(line.split(' ')[1]) : NaN;
}

async function main() {
    const cfg = {
        proxy: env('PROXY_URL').replace(/\/+$/, ''),
        clientKey: env('CLIENT_KEY'),
        serverKey: env('SERVER_KEY'),
        upstream: env('UPSTREAM_URL').replace(/\/+$/, ''),
        flushSeconds: Number(env('FLUSH_SECONDS')),
    };
    // The upstream groups posts by Flagsmith-SDK-User-Agent, else User-Agent, without the
    // version. As of flagsmith-nodejs 8.1.2 the Node SDK's ESM build sends "User-Agent: unknown"
    // (its getUserAgent cannot require its package.json there); the JS client sends
    // Flagsmith-SDK-User-Agent: flagsmith-js-sdk/<version>.
    const want = {
        unknown: await nodeSDK(cfg),
        'flagsmith-js-sdk': await jsClientSDK(cfg),
    };
    log('evaluated', JSON.stringify(want));

    // The proxy forwards within one flush interval; allow a few.
    const deadline = Date.now() + 10_000 + 3000 * cfg.flushSeconds;
    let got;
    const matches = () => Object.keys(want).every((sdk) => equalCounts(want[sdk], got.v1[sdk] ?? {}));
    do {
        got = await upstreamAnalytics(cfg);
        if (matches()) break;
        await sleep(200);
    } while (Date.now() < deadline);
    // Two more flush intervals: anything sent twice would show now.
    await sleep(2500 * cfg.flushSeconds);
    got = await upstreamAnalytics(cfg);
    for (const sdk of Object.keys(want)) {
        check(equalCounts(want[sdk], got.v1[sdk] ?? {}),
            `the upstream received ${JSON.stringify(got.v1[sdk] ?? {})} from ${sdk}; want ${JSON.stringify(want[sdk])}`);
    }
    const others = Object.keys(got.v1).filter((sdk) => !(sdk in want));
    check(others.length === 0, `the upstream received analytics from unexpected label sets: ${JSON.stringify(others)}`);
    check(Object.keys(got.v2).length === 0, `the upstream received v2 analytics: ${JSON.stringify(got.v2)}`);
    check(got.rejected.length === 0, `the upstream rejected posts: ${JSON.stringify(got.rejected)}`);
    check(sdkProblems.length === 0, `the SDKs logged ${sdkProblems.length} warnings or errors:\n  ${sdkProblems.join('\n  ')}`);

    let total = 0;
    for (const counts of Object.values(want)) {
        for (const n of Object.values(counts)) total += n;
    }
    const received = await proxyMetric(cfg, 'edge_proxy_analytics_received_total');
    const forwarded = await proxyMetric(cfg, 'edge_proxy_analytics_forwarded_total');
    check(received === total && forwarded === total,
        `proxy /metrics: received ${received}, forwarded ${forwarded}; want both ${total}`);

    if (failures.length > 0) {
        console.error(`analytics: ${failures.length} failure(s)`);
        return 1;
    }
    log(`PASS: the upstream received exactly ${JSON.stringify(got.v1)}`);
    return 0;
}

main().then(
    (code) => process.exit(code),
    (err) => {
        console.error('analytics:', err instanceof SetupError ? err.message : describe(err));
        process.exit(err instanceof SetupError ? 2 : 1);
    },
);
