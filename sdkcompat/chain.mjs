// chain.mjs: the JS client half of chain.sh. Flagsmith's JS client SDK (`flagsmith`, pinned in
// package.json) in realtime mode, with no polling of its own, against the last proxy of a chain.
// It prints "ready <value>" once the SDK holds the flags and its stream is open, then waits for
// FEATURE to take the value WANT and prints "seen_at_ms <Unix ms>". The SDK refetches flags only
// on an environment_updated event newer than the X-Flagsmith-Document-Updated-At it holds, so
// seeing WANT proves that the proxy showed a newer version.
//
// Exit status: 0 seen, 1 not seen within TIMEOUT_SECONDS, 2 setup problem.
// Environment: PROXY_URL, CLIENT_KEY, FEATURE, WANT, TIMEOUT_SECONDS.

import { EventSource } from 'eventsource';

function env(name) {
    const v = process.env[name];
    if (!v) {
        console.error(`chain.mjs: ${name} is not set (run this through chain.sh)`);
        process.exit(2);
    }
    return v;
}

const proxy = env('PROXY_URL').replace(/\/+$/, '');
const feature = env('FEATURE');
const want = env('WANT');
const timeoutMs = Number(env('TIMEOUT_SECONDS')) * 1000;

// The SDK opens its stream only when `window` exists, and takes the EventSource class from
// globalThis when the module loads (see realtime.mjs).
globalThis.window ??= {};
let opened = false;
globalThis.EventSource = class extends EventSource {
    constructor(url, init) {
        super(url, init);
        this.addEventListener('open', () => (opened = true));
    }
};
const { createFlagsmithInstance } = await import('flagsmith/isomorphic');

let sdk = createFlagsmithInstance();
let seenAt = null;
const value = () => sdk.getValue(feature, { skipAnalytics: true });
await sdk.init({
    environmentID: env('CLIENT_KEY'),
    api: proxy + '/api/v1/',
    realtime: true,
    eventSourceUrl: proxy + '/',
    onChange: () => {
        if (seenAt === null && value() === want) {
            seenAt = Date.now();
        }
    },
});

const deadline = Date.now() + timeoutMs;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
while (!opened) {
    if (Date.now() > deadline) {
        console.error('chain.mjs: the SDK opened no realtime stream');
        process.exit(2);
    }
    await sleep(10);
}
console.log(`ready ${value()}`);
while (seenAt === null && Date.now() < deadline) {
    await sleep(5);
}
const status = seenAt === null ? 1 : 0;
if (status === 0) {
    console.log(`seen_at_ms ${seenAt}`);
} else {
    console.error(`chain.mjs: ${feature} = ${JSON.stringify(value())} after ${timeoutMs} ms; want ${JSON.stringify(want)}`);
}
sdk.eventSource?.close();
clearInterval(sdk.analyticsInterval);
sdk = null;
process.exit(status);
