// upstream.mjs: a tiny fake Flagsmith API for realtime.sh. It serves one environment document at
// GET /api/v1/environment-document/ for one server key, as Flagsmith does: 401 for another key,
// 304 when If-Modified-Since is not older than the document's updated_at (compared in whole
// seconds, the resolution of HTTP dates). The test changes the document through a control
// endpoint that only this test uses:
//
//   POST /control/set   {"feature": NAME, "value": V}  sets NAME's feature_state_value to V and
//                       moves updated_at forward by at least one second (so that it is newer
//                       than any If-Modified-Since the proxy can send for the old document);
//                       answers {"updated_at": "<ISO>", "updated_at_seconds": <float>}
//   GET  /control/stats {"documents": n200, "not_modified": n304, "unauthorized": n401}
//   GET  /control/analytics  the flag analytics received (analytics.sh), as Flagsmith's API takes
//                       them: POST /api/v1/analytics/flags/ ({"feature": count}, 200) and
//                       POST /api/v2/analytics/flags/ ({"evaluations": [...]}, 204), server key only;
//                       answers {"v1": {SDK: {feature: sum}}, "v2": {SDK: {"feature|identifier|enabled":
//                       sum}}, "posts": n, "rejected": [reasons]}, SDK being the
//                       Flagsmith-SDK-User-Agent header or else the User-Agent, without its version
//
// Usage: node upstream.mjs DOCUMENT_JSON SERVER_KEY PORT_FILE
// It listens on a free 127.0.0.1 port and writes that port to PORT_FILE once it accepts requests.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';

const [docPath, serverKey, portFile] = process.argv.slice(2);
if (!docPath || !serverKey || !portFile) {
    console.error('usage: node upstream.mjs DOCUMENT_JSON SERVER_KEY PORT_FILE');
    process.exit(2);
}

const doc = JSON.parse(readFileSync(docPath, 'utf8'));
let updatedAtMs = parseUpdatedAt(doc.updated_at);
if (Number.isNaN(updatedAtMs)) {
    console.error(`upstream: ${docPath} has no parsable updated_at (${doc.updated_at})`);
    process.exit(2);
}
let body = JSON.stringify(doc);
const stats = { documents: 0, not_modified: 0, unauthorized: 0 };
const analytics = { v1: {}, v2: {}, posts: 0, rejected: [] };

// sdkLabel names the SDK behind an analytics post: "flagsmith-js-sdk/10.0.0" → "flagsmith-js-sdk",
// "go-resty/2.16.5 (https://…)" → "go-resty".
function sdkLabel(req) {
    const ua = req.headers['flagsmith-sdk-user-agent'] ?? req.headers['user-agent'] ?? 'none';
    return ua.split('/')[0];
}

// recordAnalytics checks a post as Flagsmith's API would and adds it up; it returns the reason for
// refusing it, or null.
function recordAnalytics(version, req, text) {
    if (req.headers['x-environment-key'] !== serverKey) {
        return `analytics posted with key ${req.headers['x-environment-key']}, not the server key`;
    }
    let body;
    try {
        body = JSON.parse(text);
    } catch {
        return `analytics body is not JSON: ${text}`;
    }
    const sdk = sdkLabel(req);
    if (version === 'v1') {
        if (typeof body !== 'object' || body === null || Array.isArray(body)) return `v1 body ${text}`;
        for (const [name, count] of Object.entries(body)) {
            if (!Number.isInteger(count) || count < 0) return `v1 count ${name}: ${count}`;
            const sums = (analytics.v1[sdk] ??= {});
            sums[name] = (sums[name] ?? 0) + count;
        }
        return null;
    }
    if (!Array.isArray(body?.evaluations)) return `v2 body ${text}`;
    for (const e of body.evaluations) {
        if (typeof e.feature_name !== 'string' || typeof e.enabled_when_evaluated !== 'boolean' || !Number.isInteger(e.count)) {
            return `v2 evaluation ${JSON.stringify(e)}`;
        }
        const key = `${e.feature_name}|${e.identity_identifier ?? ''}|${e.enabled_when_evaluated}`;
        const sums = (analytics.v2[sdk] ??= {});
        sums[key] = (sums[key] ?? 0) + e.count;
    }
    return null;
}

// parseUpdatedAt reads Flagsmith's "2026-01-15T12:00:00.250000Z" (microseconds; Date.parse
// keeps milliseconds, which is all this fake needs).
function parseUpdatedAt(s) {
    return typeof s === 'string' ? Date.parse(s.replace(/(\.\d{3})\d+/, '$1')) : NaN;
}

// formatUpdatedAt writes Flagsmith's format, with microseconds.
function formatUpdatedAt(ms) {
    return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

function send(res, status, json, headers = {}) {
    const text = json === undefined ? '' : JSON.stringify(json);
    res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
    res.end(text);
}

function readBody(req) {
    return new Promise((resolve, reject) => {
        let text = '';
        req.setEncoding('utf8');
        req.on('data', (chunk) => (text += chunk));
        req.on('end', () => resolve(text));
        req.on('error', reject);
    });
}

const server = createServer(async (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    try {
        if (req.method === 'GET' && (path === '/api/v1/environment-document/' || path === '/api/v1/environment-document')) {
            if (req.headers['x-environment-key'] !== serverKey) {
                stats.unauthorized++;
                return send(res, 401, { detail: 'Invalid or missing X-Environment-Key' });
            }
            const ims = Date.parse(req.headers['if-modified-since'] ?? '');
            if (!Number.isNaN(ims) && Math.floor(updatedAtMs / 1000) * 1000 <= ims) {
                stats.not_modified++;
                res.writeHead(304);
                return res.end();
            }
            stats.documents++;
            res.writeHead(200, { 'Content-Type': 'application/json', 'Last-Modified': new Date(updatedAtMs).toUTCString() });
            return res.end(body);
        }
        if (req.method === 'POST' && path === '/control/set') {
            const { feature, value } = JSON.parse(await readBody(req));
            const fs = doc.feature_states.find((f) => f.feature.name === feature);
            if (!fs) {
                return send(res, 404, { error: `no feature ${feature}` });
            }
            fs.feature_state_value = value;
            // At least a second later than before: the proxy's If-Modified-Since has whole seconds.
            updatedAtMs = Math.max(Date.now(), Math.floor(updatedAtMs / 1000) * 1000 + 1000) + 123;
            doc.updated_at = formatUpdatedAt(updatedAtMs);
            body = JSON.stringify(doc);
            return send(res, 200, { updated_at: doc.updated_at, updated_at_seconds: updatedAtMs / 1000 });
        }
        if (req.method === 'GET' && path === '/control/stats') {
            return send(res, 200, stats);
        }
        if (req.method === 'POST' && (path === '/api/v1/analytics/flags/' || path === '/api/v2/analytics/flags/')) {
            const version = path.startsWith('/api/v1/') ? 'v1' : 'v2';
            const reason = recordAnalytics(version, req, await readBody(req));
            if (reason) {
                analytics.rejected.push(reason);
                return send(res, 400, { detail: reason });
            }
            analytics.posts++;
            if (version === 'v1') return send(res, 200);
            res.writeHead(204);
            return res.end();
        }
        if (req.method === 'GET' && path === '/control/analytics') {
            return send(res, 200, analytics);
        }
        send(res, 404, { detail: 'Not found.' });
    } catch (err) {
        send(res, 400, { error: String(err) });
    }
});

server.listen(0, '127.0.0.1', () => {
    // Written atomically: realtime.sh reads the file as soon as it appears.
    writeFileSync(portFile + '.tmp', String(server.address().port));
    renameSync(portFile + '.tmp', portFile);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
