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
