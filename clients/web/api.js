// The orchestrator's HTTP API (grid_orchestrator/server/http_gateway.h):
//
//   const models = await fetchModels({token});
//   const grid = await streamGrid(request, {token, signal, onEvent});
//   const curve = await streamCurve({grid: request, trunks: 20}, {token, signal, onEvent});
//
// The streams are Server-Sent Events read with fetch() rather than
// EventSource, so that a bearer token can go in the Authorization header;
// aborting `signal` closes the connection, which cancels the run on the
// server. Errors, whether an HTTP status or an `error` event, become
// ApiError with the server's code and message.

export class ApiError extends Error {
  constructor(code, message, status = 0) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

// stream: the answer is an event stream (else JSON), to a JSON request body.
function headers(token, {stream = false} = {}) {
  const result = {Accept: stream ? 'text/event-stream' : 'application/json'};
  if (stream) result['Content-Type'] = 'application/json';
  if (token) result.Authorization = `Bearer ${token}`;
  return result;
}

// A non-2xx response as ApiError: the gateway answers {"code","message"}.
async function errorOf(response) {
  let body = '';
  try {
    body = await response.text();
    const error = JSON.parse(body);
    if (error && error.message) return new ApiError(error.code || 'UNKNOWN', error.message, response.status);
  } catch {
    // Not JSON: fall through to the status line.
  }
  // A proxy's own page (an ingress's HTML 502) says no more than its status
  // line; other text is cut to what a banner can show.
  const html = (response.headers.get('Content-Type') ?? '').toLowerCase().startsWith('text/html');
  let text = html ? '' : body.trim();
  if (text.length > 300) text = `${text.slice(0, 300)}…`;
  // Over HTTP/2 a browser has no status text: say where the page came from.
  return new ApiError(`HTTP ${response.status}`,
      text || response.statusText || (html ? 'an error page from a server in front' : ''), response.status);
}

async function send(url, init) {
  try {
    return await fetch(url, init);
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError('UNAVAILABLE', `cannot reach the orchestrator (${error.message})`);
  }
}

export async function fetchModels({token, signal} = {}) {
  const response = await send('api/v1/models', {headers: headers(token), signal});
  if (!response.ok) throw await errorOf(response);
  const body = await response.json();
  return body.models ?? [];
}

// One SSE block ("event: x\ndata: ...") as {event, data}, or null for a
// comment or keep-alive.
export function parseSseBlock(block) {
  let event = 'message';
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (line === '' || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  if (data.length === 0) return null;
  return {event, data: data.join('\n')};
}

// Streams one grid. onEvent(name, payload) gets each plan, trunk and cell
// (payload = the GridEvent's inner message) and finally the grid, which is
// also the resolved value.
export function streamGrid(request, {token, signal, onEvent}) {
  return streamEvents('api/v1/grid/stream', request, {token, signal, onEvent, last: 'grid'});
}

// Streams one decision curve (a CurveRequest: {grid: GridRequest, trunks}).
// onEvent(name, payload) gets the plan, a progress per finished trunk
// (CurveProgress) and finally the curve (CurveResult), which is also the
// resolved value.
// A running curve sends an event at least every 15 s; past CURVE_SILENCE_MS
// with none, the connection counts as lost (a network gone without a word,
// a laptop asleep) and the curve ends with UNAVAILABLE, as `dgrid curve
// --silence_s` and the Python client's `silence=` have it.
export const CURVE_SILENCE_MS = 60_000;

export function streamCurve(request, {token, signal, onEvent}) {
  return streamEvents('api/v1/curve/stream', request,
      {token, signal, onEvent, last: 'curve', silenceMs: CURVE_SILENCE_MS});
}

// The reader's next chunk, or ApiError UNAVAILABLE after `silenceMs` (0:
// none) without one.
function readWithin(reader, silenceMs) {
  if (!silenceMs) return reader.read();
  let timer;
  const silent = new Promise((_, fail) => {
    timer = setTimeout(() => fail(new ApiError('UNAVAILABLE',
        `no word from the orchestrator for ${silenceMs / 1000} s: the connection is taken as lost`)),
    silenceMs);
  });
  return Promise.race([reader.read(), silent]).finally(() => clearTimeout(timer));
}

// The server ends a stream right after its last event: read to that end in
// the background, so that the request completes (cancelled at once, every
// grid showed in the browser's tools as a failed request), and cancel it
// if the end does not come soon.
function readToTheEnd(reader) {
  const timer = setTimeout(() => reader.cancel().catch(() => {}), 5000);
  (async () => {
    try {
      while (!(await reader.read()).done) { /* nothing more is expected */ }
    } catch { /* cancelled, or the connection closed: the answer is in */ }
    clearTimeout(timer);
  })();
}

// POSTs `request` and reads its SSE answer up to the event named `last`.
async function streamEvents(url, request, {token, signal, onEvent, last, silenceMs = 0}) {
  const response = await send(url, {
    method: 'POST',
    headers: headers(token, {stream: true}),
    body: JSON.stringify(request),
    signal,
  });
  if (!response.ok) throw await errorOf(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    return await readEvents(reader, {onEvent, last, silenceMs});
  } catch (error) {
    // Silence, an error event, or an event this page failed on (a parse, a
    // drawing): the server sees the client gone and stops the work.
    reader.cancel().catch(() => {});
    throw error;
  }
}

// Reads SSE events from `reader`, handing each to onEvent, up to the one
// named `last`, whose payload it returns.
async function readEvents(reader, {onEvent, last, silenceMs}) {
  // The text not yet parsed, as chunks: a large event (a grid's last, with
  // every image) arrives in many, and searching the growing whole for its
  // end at each one would take time quadratic in its size.
  let parts = [];
  let tail = '';  // the last characters received, for an end split across chunks
  for (;;) {
    const {value, done} = await readWithin(reader, silenceMs);
    if (done) break;
    parts.push(value);
    const probe = tail + value;
    if (probe.search(/\r?\n\r?\n/) < 0) {
      tail = probe.slice(-3);
      continue;
    }
    let buffer = parts.join('');
    parts = [];
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, '');
      const message = parseSseBlock(block);
      if (!message) continue;
      const payload = JSON.parse(message.data);
      if (message.event === 'error') {
        throw new ApiError(payload.code || 'UNKNOWN', payload.message || `the ${last} failed`);
      }
      const inner = payload[message.event];
      if (inner === undefined) continue;  // an event this page does not know
      onEvent(message.event, inner);
      if (message.event === last) {
        readToTheEnd(reader);
        return inner;
      }
    }
    parts = [buffer];
    tail = buffer.slice(-3);
  }
  throw new ApiError('UNAVAILABLE', `the stream ended before the ${last} was complete`);
}
