// realtime.mjs: realtime test of the edge proxy with Flagsmith's JS client SDK (`flagsmith`,
// pinned in package.json) running in Node. realtime.sh starts the fake upstream (upstream.mjs)
// and the proxy, then runs this.
//
// The SDK is initialised with realtime: true and no polling of its own (no startListening, no
// analytics), so the only thing that can make it fetch flags again is an environment_updated
// event on the proxy's stream. Then:
//   0. the proxy polls an unchanged document (304): the SDK must get no event and not refetch;
//   1. the upstream document changes and POST /proxy/refresh is called: the SDK must show the
//      new value within 1 s of the change;
//   2. the document changes again, with no refresh: the SDK must show it within one poll
//      period plus 1 s;
//   3. every flags fetch after the first must have been caused by a stream event (and the proxy's
//      /metrics must count the stream while it is open, and drop it once the SDK closes it).
//
// Exit status: 0 pass, 1 failure, 2 setup problem.
//
// Environment: PROXY_URL (e.g. http://127.0.0.1:8000), CLIENT_KEY, ADMIN_TOKEN, UPSTREAM_URL
// (the fake upstream, for its /control endpoints), POLL_SECONDS (the proxy's
// api_poll_frequency_seconds); FLAGSMITH_LOGS=1 prints the SDK's own log.

import { performance } from 'node:perf_hooks';
import { EventSource as EventSourcePolyfill } from 'eventsource';

const FEATURE = 'banner_colour'; // "blue" in document.json
const REFRESH_BOUND_MS = 1000;
const HANG_TIMEOUT_MS = 15000; // only to avoid hanging; never an assertion of speed

class SetupError extends Error {}

function env(name) {
    const v = process.env[name];
    if (!v) {
        throw new SetupError(`${name} is not set (run this through realtime.sh)`);
    }
    return v;
}

const log = (...args) => console.log('realtime:', ...args);
const ms = (t) => `${Math.round(t)} ms`;

let sdk = null; // closed on every exit path
const failures = [];
function check(ok, message) {
    if (!ok) {
        failures.push(message);
        console.error(`realtime: FAIL: ${message}`);
    }
    return ok;
}

// What the SDK does, recorded with performance.now() times.
const trace = {
    streams: [], // URLs of the EventSources the SDK opened (the reconnecting wrapper opens one per connection)
    opens: 0,
    errors: 0,
    events: [], // {t, updated_at}
    flagFetches: [], // {t, url}
    changes: [], // {t, value}
};

// The SDK's realtime code (reconnecting-eventsource, bundled) takes the EventSource class from
// globalThis when the module loads; Node 20 has none, so the `eventsource` package stands in.
// This subclass only records what happens on each connection.
class RecordingEventSource extends EventSourcePolyfill {
    constructor(url, init) {
        super(url, init);
        trace.streams.push(String(url));
        this.addEventListener('open', () => trace.opens++);
        this.addEventListener('error', () => trace.errors++);
        this.addEventListener('environment_updated', (e) => {
            let updatedAt;
            try {
                updatedAt = JSON.parse(e.data).updated_at;
            } catch {
                updatedAt = `unparsable: ${e.data}`;
            }
            trace.events.push({ t: performance.now(), updated_at: updatedAt });
        });
    }
}

async function waitFor(what, predicate, timeoutMs = HANG_TIMEOUT_MS) {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
        const v = await predicate();
        if (v) {
            return v;
        }
        if (performance.now() > deadline) {
            throw new Error(`timed out after ${ms(timeoutMs)} waiting for ${what}`);
        }
        await new Promise((r) => setTimeout(r, 5));
    }
}

async function subscribers(proxy) {
    const res = await fetch(proxy + '/metrics');
    const text = await res.text();
    const m = /^edge_proxy_sse_subscribers (\d+)$/m.exec(text);
    if (!m) {
        throw new Error('/metrics has no edge_proxy_sse_subscribers line');
    }
    return Number(m[1]);
}

async function setUpstream(upstream, value) {
    const res = await fetch(upstream + '/control/set', {
        method: 'POST',
        body: JSON.stringify({ feature: FEATURE, value }),
    });
    if (res.status !== 200) {
        throw new SetupError(`upstream /control/set answered ${res.status}: ${await res.text()}`);
    }
    return res.json();
}

// change publishes a new value upstream, optionally pushes a refresh, and waits for the SDK's
// onChange to show it. Returns the elapsed time from just before the upstream change.
async function change(cfg, value, { refresh }) {
    const t0 = performance.now();
    const published = await setUpstream(cfg.upstream, value);
    if (refresh) {
        const res = await fetch(cfg.proxy + '/proxy/refresh', {
            method: 'POST',
            headers: { Authorization: `Bearer ${cfg.adminToken}` },
        });
        check(res.status === 202, `POST /proxy/refresh = ${res.status} ${await res.text()}; want 202`);
    }
    const seen = await waitFor(`the SDK to show ${FEATURE} = ${JSON.stringify(value)}`, () =>
        trace.changes.find((c) => c.t >= t0 && c.value === value),
    );
    return { elapsed: seen.t - t0, published, t0 };
}

async function main() {
    const cfg = {
        proxy: env('PROXY_URL').replace(/\/+$/, ''),
        clientKey: env('CLIENT_KEY'),
        adminToken: env('ADMIN_TOKEN'),
        upstream: env('UPSTREAM_URL').replace(/\/+$/, ''),
        pollSeconds: Number(env('POLL_SECONDS')),
    };
    if (!(cfg.pollSeconds > 0)) {
        throw new SetupError(`POLL_SECONDS=${process.env.POLL_SECONDS} is not a positive number`);
    }

    // The SDK opens its stream only when `window` exists (flagsmith-core: `realtime && typeof
    // window !== 'undefined'`), and flagsmith/isomorphic hands it the EventSource only then.
    // Both are read when the module loads, hence the dynamic import after this.
    globalThis.window ??= {};
    globalThis.EventSource = RecordingEventSource;
    let createFlagsmithInstance;
    try {
        ({ createFlagsmithInstance } = await import('flagsmith/isomorphic'));
    } catch (err) {
        throw new SetupError(`cannot load flagsmith/isomorphic (npm ci?): ${err.message}`);
    }

    const recordingFetch = (url, options) => {
        if (String(url).includes('/flags/')) {
            trace.flagFetches.push({ t: performance.now(), url: String(url) });
        }
        return fetch(url, options);
    };

    sdk = createFlagsmithInstance();
    await sdk.init({
        environmentID: cfg.clientKey,
        api: cfg.proxy + '/api/v1/',
        realtime: true,
        eventSourceUrl: cfg.proxy + '/',
        fetch: recordingFetch,
        enableLogs: process.env.FLAGSMITH_LOGS === '1',
        onChange: () => {
            trace.changes.push({ t: performance.now(), value: sdk.getValue(FEATURE, { skipAnalytics: true }) });
        },
    });

    const initial = sdk.getValue(FEATURE, { skipAnalytics: true });
    if (!check(initial === 'blue', `after init, getValue(${FEATURE}) = ${JSON.stringify(initial)}; want "blue"`)) {
        return;
    }
    const wantStream = `${cfg.proxy}/sse/environments/${cfg.clientKey}/stream`;
    if (!check(sdk.eventSource, 'the SDK opened no realtime stream (flagsmith.eventSource is null)')) {
        return;
    }
    check(sdk.getFlagInterval == null, 'the SDK has a polling interval; this test needs realtime alone');
    await waitFor('the SDK stream to open', () => trace.opens > 0);
    check(trace.streams[0] === wantStream, `the SDK's stream URL = ${trace.streams[0]}; want ${wantStream}`);
    // The proxy sends the current updated_at on connect; the SDK must see it and not refetch
    // (it equals the X-Flagsmith-Document-Updated-At of the flags it holds).
    await waitFor('the first environment_updated event (current updated_at on connect)', () => trace.events.length > 0);
    log(`stream open at ${trace.streams[0]}; first event updated_at = ${trace.events[0].updated_at}, SDK timestamp = ${sdk.timestamp}`);
    check(trace.events[0].updated_at === sdk.timestamp,
        `first event updated_at = ${trace.events[0].updated_at}; want the SDK's X-Flagsmith-Document-Updated-At ${sdk.timestamp}`);
    const subs = await waitFor('edge_proxy_sse_subscribers >= 1', async () => ((await subscribers(cfg.proxy)) >= 1 ? await subscribers(cfg.proxy) : 0));
    log(`edge_proxy_sse_subscribers = ${subs} while the SDK is connected`);

    // An unchanged document (the upstream answers 304) must send the SDK nothing.
    const stats = () => fetch(cfg.upstream + '/control/stats').then((r) => r.json());
    await waitFor('a poll answered 304 Not Modified', async () => (await stats()).not_modified >= 1, cfg.pollSeconds * 1000 + HANG_TIMEOUT_MS);
    await new Promise((r) => setTimeout(r, 200)); // time for an event, should the proxy send one
    check(trace.events.length === 1 && trace.flagFetches.length === 1,
        `after a 304 poll the SDK got ${trace.events.length} events and fetched flags ${trace.flagFetches.length} times; want 1 and 1`);

    const nonce = Math.random().toString(36).slice(2, 8);

    // 1. A change pushed with POST /proxy/refresh.
    const one = await change(cfg, `green-${nonce}`, { refresh: true });
    log(`(1) refresh: SDK saw the change ${ms(one.elapsed)} after the upstream change (bound ${ms(REFRESH_BOUND_MS)})`);
    check(one.elapsed <= REFRESH_BOUND_MS, `(1) with POST /proxy/refresh the SDK took ${ms(one.elapsed)}; want <= ${ms(REFRESH_BOUND_MS)}`);

    // 2. A change found by the proxy's own poll.
    const pollBound = cfg.pollSeconds * 1000 + 1000;
    const two = await change(cfg, `purple-${nonce}`, { refresh: false });
    log(`(2) poll: SDK saw the change ${ms(two.elapsed)} after the upstream change (bound ${ms(pollBound)})`);
    check(two.elapsed <= pollBound, `(2) without refresh the SDK took ${ms(two.elapsed)}; want <= ${ms(pollBound)} (one poll period + 1 s)`);

    // 3. Every refetch came from the stream.
    const stillOpen = await subscribers(cfg.proxy);
    check(stillOpen >= 1, `edge_proxy_sse_subscribers = ${stillOpen} before closing; want >= 1`);
    for (const [step, c] of [['(1)', one], ['(2)', two]]) {
        const ev = trace.events.find((e) => e.t >= c.t0 && Math.abs(e.updated_at - c.published.updated_at_seconds) < 1e-3);
        if (check(ev, `${step} no environment_updated event with updated_at ${c.published.updated_at_seconds} (${c.published.updated_at}) reached the SDK`)) {
            log(`${step} event updated_at ${ev.updated_at} arrived ${ms(ev.t - c.t0)} after the upstream change`);
        }
    }
    check(trace.flagFetches.length >= 3, `the SDK fetched flags ${trace.flagFetches.length} times; want >= 3 (init + 2 changes)`);
    for (const [i, f] of trace.flagFetches.entries()) {
        if (i === 0) {
            continue; // init
        }
        const prev = trace.flagFetches[i - 1].t;
        check(trace.events.some((e) => e.t > prev && e.t <= f.t),
            `flags fetch #${i + 1} at ${ms(f.t)} followed no stream event since the previous fetch: the SDK polled`);
    }
    log(`SDK flag fetches: ${trace.flagFetches.length}, stream events: ${trace.events.length}, ` +
        `stream connections: ${trace.streams.length}, stream errors: ${trace.errors}`);
    check(trace.streams.length === 1 && trace.errors === 0,
        `the SDK's stream reconnected (${trace.streams.length} connections, ${trace.errors} errors); want one clean connection`);

    const up = await stats();
    log(`upstream served ${up.documents} documents, ${up.not_modified} × 304, ${up.unauthorized} × 401`);
    check(up.unauthorized === 0, `the upstream refused the proxy's key ${up.unauthorized} times`);

    // Closing the SDK's stream must end the proxy's subscriber (it notices at the latest on the
    // next heartbeat write).
    closeSDK();
    await waitFor('edge_proxy_sse_subscribers to drop to 0 after the SDK closed its stream', async () => (await subscribers(cfg.proxy)) === 0, 5000);
}

// closeSDK ends what keeps the process alive: the stream (the SDK has no API to close it) and
// the analytics timer it starts whenever `window` exists.
function closeSDK() {
    if (!sdk) {
        return;
    }
    sdk.eventSource?.close();
    sdk.eventSource = null;
    sdk.stopListening?.();
    clearInterval(sdk.analyticsInterval);
    sdk = null;
}

let status = 0;
try {
    await main();
    status = failures.length ? 1 : 0;
} catch (err) {
    if (err instanceof SetupError) {
        console.error(`realtime: setup problem: ${err.message}`);
        status = 2;
    } else {
        console.error(`realtime: FAIL: ${err.stack || err}`);
        status = 1;
    }
}
closeSDK();
if (status === 0) {
    log('PASS');
} else if (status === 1) {
    console.error(`realtime: ${failures.length || 1} failure(s); SDK trace: ${JSON.stringify(trace)}`);
}
process.exitCode = status;
// Everything is closed; should a handle still be open, do not hang.
setTimeout(() => {
    console.error('realtime: the process did not exit on its own 3 s after closing the SDK (an open handle)');
    process.exit(status || 1);
}, 3000).unref();
