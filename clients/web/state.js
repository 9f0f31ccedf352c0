// The page's state and its URL. Everything a view depends on lives in the
// query string, so a link (or Back and Forward) reproduces it:
//
//   ?prompt=high&seed=7&steps=20&rows=0,5,10&cols=3&trunk=7_0-1424..._5-7194...
//   ?model=sd&prompt=a+photo+of+a+cat&negative=blurry&seed=7
//
// `prompt` is a class name for a class model and free text for a text model;
// `negative` is a text model's negative prompt. An empty or missing field means "the preset's or the model's default", as
// in GridRequest. `trunk` is a promoted path (init_seed, then
// from_step-noise_seed per segment); when set the server ignores `seed`.
// The bearer token is a secret and never goes into the URL.

export const FIELDS = ['model', 'prompt', 'negative', 'seed', 'preset', 'steps', 'eta', 'guidance',
  'rows', 'cols', 'spacing'];

// A mistake in the form, found before anything is sent.
export class FormError extends Error {
  constructor(message) {
    super(message);
    this.code = 'INVALID_ARGUMENT';
  }
}

export function emptyState() {
  const state = {trunk: null};
  for (const field of FIELDS) state[field] = '';
  return state;
}

export function stateFromSearch(search) {
  const params = new URLSearchParams(search);
  const state = emptyState();
  for (const field of FIELDS) state[field] = (params.get(field) ?? '').trim();
  const trunk = params.get('trunk');
  if (trunk) state.trunk = decodePath(trunk);
  return state;
}

// True when the URL names a view to show (a shared link, or history).
export function hasView(search) {
  const params = new URLSearchParams(search);
  return params.has('seed') || params.has('trunk');
}

export function searchFromState(state) {
  const params = new URLSearchParams();
  for (const field of FIELDS) {
    // prompt is written even when empty: "" is a choice (unconditional).
    if (state[field] !== '' || field === 'prompt') params.set(field, state[field]);
  }
  if (state.trunk) params.set('trunk', encodePath(state.trunk));
  // Keep the separators of lists and paths readable.
  return '?' + params.toString().replace(/%2C/gi, ',');
}

export function sameState(a, b) {
  return searchFromState(a) === searchFromState(b);
}

// Path <-> "7_0-14245985387659098532_5-7194228016281548846". uint64 values
// stay strings: they do not fit in a JavaScript number.
export function encodePath(path) {
  const parts = [String(path.init_seed ?? '0')];
  for (const segment of path.segments ?? []) {
    parts.push(`${segment.from_step ?? 0}-${segment.noise_seed ?? '0'}`);
  }
  return parts.join('_');
}

export function decodePath(text) {
  const parts = String(text).split('_');
  if (!/^\d+$/.test(parts[0])) throw new FormError(`trunk: bad path "${text}"`);
  const path = {init_seed: parts[0], segments: []};
  for (const part of parts.slice(1)) {
    const match = /^(\d+)-(\d+)$/.exec(part);
    if (!match) throw new FormError(`trunk: bad segment "${part}" in "${text}"`);
    path.segments.push({from_step: Number(match[1]), noise_seed: match[2]});
  }
  return path;
}

function number(field, text, {integer}) {
  const value = Number(text);
  if (text === '' || !Number.isFinite(value)) throw new FormError(`${field}: not a number: "${text}"`);
  if (integer && !Number.isInteger(value)) throw new FormError(`${field}: not a whole number: "${text}"`);
  return value;
}

export function parseRows(text) {
  const rows = [];
  for (const part of text.split(/[\s,]+/)) {
    if (part === '') continue;
    rows.push(number('rows', part, {integer: true}));
  }
  return rows;
}

// The GridRequest (protobuf JSON mapping) for a state. Range checks are the
// server's: its message is the one the user sees.
export function requestFromState(state) {
  const request = {};
  if (state.model) request.model = state.model;
  request.prompt = state.prompt;
  if (state.negative) request.negative_prompt = state.negative;
  if (state.seed !== '') {
    if (!/^\d+$/.test(state.seed)) throw new FormError(`seed: not a whole number: "${state.seed}"`);
    request.seed = state.seed;
  }
  if (state.preset) request.preset = state.preset;
  if (state.steps !== '') request.steps = number('steps', state.steps, {integer: true});
  if (state.eta !== '') request.eta = number('eta', state.eta, {integer: false});
  if (state.guidance !== '') request.guidance = number('guidance', state.guidance, {integer: false});
  if (state.spacing) request.spacing = `SPACING_${state.spacing.toUpperCase()}`;
  if (state.rows !== '') request.branch_steps = parseRows(state.rows);
  if (state.cols !== '') request.branches = number('columns', state.cols, {integer: true});
  if (state.trunk) request.trunk = state.trunk;
  return request;
}

// A random seed, as a decimal string. Seeds are uint64; 32 random bits keep
// links short and are plenty for exploring.
export function randomSeed() {
  return String(crypto.getRandomValues(new Uint32Array(1))[0]);
}
