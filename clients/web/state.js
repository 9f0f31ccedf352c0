// The page's state and its URL. Everything a view depends on lives in the
// query string, so a link (or Back and Forward) reproduces it:
//
//   ?prompt=high&seed=7&steps=20&rows=0,5,10&cols=3&trunk=7_0-1424..._5-7194...
//   ?model=sd&prompt=a+photo+of+a+cat&negative=blurry&seed=7
//   ?prompt=coat&switch=sneaker&noise=trunk&seed=7&rows=0,5,10&trunk=7_0-1424..._5-1424...%237
//   ?prompt=bag&seed=7&sampler=euler_ancestral
//   ?model=sdxl&prompt=a+lighthouse&seed=7&original=512x512&crop=0x64
//
// `prompt` is a class name for a class model and free text for a text model;
// `negative` is a text model's negative prompt. `switch` (and a text model's
// `switchNegative`) is the prompt each row's branches switch to at the row's
// step; `noise=trunk` keeps the trunk's noise in the branches. `sampler` is
// ddim or euler_ancestral (euler_a, the CLI's short name, reads as
// euler_ancestral). `original`, `crop` and `target` are an SDXL-style
// model's size conditioning, HxW and TOPxLEFT in pixels. An empty or
// missing field means "the preset's or the
// model's default", as in GridRequest. `trunk` is a promoted path
// (init_seed, then from_step-noise_seed per segment, with the segment's
// prompt when it switches); when set the server ignores `seed`.
// The bearer token is a secret and never goes into the URL.

export const FIELDS = ['model', 'prompt', 'negative', 'switch', 'switchNegative', 'noise', 'seed', 'preset',
  'steps', 'eta', 'guidance', 'rows', 'cols', 'spacing', 'sampler', 'original', 'crop', 'target'];

// The size fields and the SizeConditioning fields each fills.
const SIZES = {
  original: ['original_height', 'original_width'],
  crop: ['crop_top', 'crop_left'],
  target: ['target_height', 'target_width'],
};

// The Sampler enum names (protobuf JSON) of the `sampler` values.
const SAMPLERS = {ddim: 'SAMPLER_DDIM', euler_ancestral: 'SAMPLER_EULER_ANCESTRAL'};

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
  if (state.sampler === 'euler_a') state.sampler = 'euler_ancestral';
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
  return '?' + params.toString().replace(/%2C/gi, ',').replace(/%7E/gi, '~');
}

export function sameState(a, b) {
  return searchFromState(a) === searchFromState(b);
}

// Path <-> "7_0-14245985387659098532_5-7194228016281548846". uint64 values
// stay strings: they do not fit in a JavaScript number. A segment that
// switches the prompt carries its conditioning, so that a promoted switched
// cell is the same trajectory: "5-7194...#3" (class index 3), "5-7194...~a
// dog" (a prompt), "5-7194...~a dog~blurry" (and a negative prompt), "~"
// alone (unconditional). In the texts %, _ and ~ are escaped as %25, %5F
// and %7E.
export function encodePath(path) {
  const parts = [String(path.init_seed ?? '0')];
  for (const segment of path.segments ?? []) {
    parts.push(`${segment.from_step ?? 0}-${segment.noise_seed ?? '0'}${encodeConditioning(segment.conditioning)}`);
  }
  return parts.join('_');
}

const escapeText = (text) => text.replace(/[%_~]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
const unescapeText = (text) => text.replace(/%(25|5F|7E)/gi, (_, hex) => String.fromCharCode(parseInt(hex, 16)));

function encodeConditioning(conditioning) {
  if (!conditioning) return '';
  if (conditioning.class_index !== undefined) return `#${conditioning.class_index}`;
  const negative = conditioning.negative_prompt ? `~${escapeText(conditioning.negative_prompt)}` : '';
  return `~${escapeText(conditioning.prompt ?? '')}${negative}`;
}

export function decodePath(text) {
  const parts = String(text).split('_');
  if (!/^\d+$/.test(parts[0])) throw new FormError(`trunk: bad path ${shown(text)}`);
  const path = {init_seed: parts[0], segments: []};
  for (const part of parts.slice(1)) {
    const match = /^(\d+)-(\d+)(?:#(\d+)|~([^~]*)(?:~([^~]*))?)?$/.exec(part);
    if (!match) throw new FormError(`trunk: bad segment ${shown(part)} in ${shown(text)}`);
    const [, fromStep, noiseSeed, classIndex, prompt, negative] = match;
    const segment = {from_step: Number(fromStep), noise_seed: noiseSeed};
    if (classIndex !== undefined) {
      segment.conditioning = {class_index: Number(classIndex)};
    } else if (prompt !== undefined) {
      segment.conditioning = {};
      if (prompt) segment.conditioning.prompt = unescapeText(prompt);
      if (negative) segment.conditioning.negative_prompt = unescapeText(negative);
    }
    path.segments.push(segment);
  }
  return path;
}

// A value echoed in a message: at most 40 characters of it.
function shown(text) {
  return text.length > 40 ? `"${text.slice(0, 40)}…" (${text.length} characters)` : `"${text}"`;
}

function number(field, text, {integer}) {
  const value = Number(text);
  if (text === '' || !Number.isFinite(value)) throw new FormError(`${field}: not a number: ${shown(text)}`);
  // Digits alone: Number() reads "1e3" as 1000 and "0x10" as 16.
  if (integer && (!/^[+-]?\d+$/.test(text) || !Number.isInteger(value))) {
    throw new FormError(`${field}: not a whole number: ${shown(text)}`);
  }
  // Past the request's number types (int32, float) the message named those
  // types, not the field's own range.
  if (integer ? value > 2147483647 || value < -2147483648 : Math.abs(value) > 3.4e38) {
    throw new FormError(`${field}: ${shown(text)} is far too large`);
  }
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
  if (state.switch) request.switch_prompt = state.switch;
  if (state.switchNegative) {
    request.switch_negative_prompt = state.switchNegative;
    // A switch of the negative prompt alone: to the same prompt (the form's
    // "empty: no switch" read as a refusal, "give switch_prompt too").
    if (!state.switch) {
      if (!state.prompt) {
        throw new FormError('switch_negative_prompt: a switch of the negative prompt alone keeps ' +
            'the prompt, and there is none; give a switch prompt');
      }
      request.switch_prompt = state.prompt;
    }
  }
  if (state.noise) request.branch_noise = `BRANCH_NOISE_${state.noise.toUpperCase()}`;
  if (state.seed !== '') {
    if (!/^\d+$/.test(state.seed)) throw new FormError(`seed: not a whole number: ${shown(state.seed)}`);
    if (BigInt(state.seed) >= 2n ** 64n) throw new FormError(`seed: at most 2^64 - 1, got ${shown(state.seed)}`);
    request.seed = BigInt(state.seed).toString();
  }
  if (state.preset) request.preset = state.preset;
  if (state.steps !== '') request.steps = number('steps', state.steps, {integer: true});
  if (state.eta !== '') request.eta = number('eta', state.eta, {integer: false});
  if (state.guidance !== '') request.guidance = number('guidance', state.guidance, {integer: false});
  if (state.spacing) request.spacing = `SPACING_${state.spacing.toUpperCase()}`;
  if (state.sampler) {
    if (!SAMPLERS[state.sampler]) {
      throw new FormError(`sampler: ddim or euler_ancestral, got ${shown(state.sampler)}`);
    }
    request.sampler = SAMPLERS[state.sampler];
  }
  for (const [field, [first, second]] of Object.entries(SIZES)) {
    if (state[field] === '') continue;
    const match = /^(\d+)\s*[x×]\s*(\d+)$/.exec(state[field]);
    if (!match) throw new FormError(`${field}: give two whole numbers as AxB, e.g. 512x512, got ${shown(state[field])}`);
    request.size = {...request.size, [first]: Number(match[1]), [second]: Number(match[2])};
  }
  if (state.rows !== '') request.branch_steps = parseRows(state.rows);
  if (state.cols !== '') request.branches = number('columns', state.cols, {integer: true});
  if (state.trunk) request.trunk = state.trunk;
  return request;
}

// The CurveRequest for a state: its grid, with `trunks` trunks drawn from
// seed, seed + 1, ... A promoted trunk is left out (the server refuses
// one: a curve's trunks are its seeds').
export function curveRequestFromState(state, trunks) {
  return {
    grid: requestFromState({...state, trunk: null}),
    trunks: number('trunks', String(trunks).trim(), {integer: true}),
  };
}

// A random seed, as a decimal string. Seeds are uint64; 32 random bits keep
// links short and are plenty for exploring.
export function randomSeed() {
  return String(crypto.getRandomValues(new Uint32Array(1))[0]);
}
