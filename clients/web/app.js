// The Diffusion Grid explorer: the controls, the live grid, the trajectory
// of the hovered or focused cell, promotion (click or Enter) with history,
// the divergence plot, the exports, and the decision curve of the form's
// grid ("When is what decided?"). State lives in the URL (state.js); the
// server is reached through api.js.

import {ApiError, fetchModels, streamCurve, streamGrid} from './api.js';
import {curveDivergencePlot, curveLegend, divergencePlot, headsPlot, plotLegend} from './plot.js';
import {
  FIELDS, curveRequestFromState, emptyState, encodePath, hasView, randomSeed, requestFromState,
  searchFromState, stateFromSearch,
} from './state.js';

const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);

const form = byTestId('controls');
// The state's fields by their control; `prompt` and `switch` are class
// lists, and a text model's prompts are typed in `promptText` and
// `switchText` instead.
const CONTROL_TEST_IDS = {negative: 'negative-prompt', switchNegative: 'switch-negative'};
const controls = Object.fromEntries([...FIELDS, 'token'].map(
    (name) => [name, byTestId(CONTROL_TEST_IDS[name] ?? name)]));
controls.promptText = byTestId('prompt-text');
controls.switchText = byTestId('switch-text');
const promptLabel = byTestId('prompt-label');
const switchLabel = byTestId('switch-label');
const promptExamples = byTestId('prompt-examples');
const negativeField = byTestId('negative-field');
const switchNegativeField = byTestId('switch-negative-field');
const sizeField = byTestId('size-field');
const tokensNote = byTestId('tokens-note');
const linkNote = byTestId('link-note');
const gridBox = byTestId('grid');
const trunkFigure = byTestId('trunk');
const trunkFrame = byTestId('trunk-frame');
const trunkCaption = byTestId('trunk-caption');
const trajectory = byTestId('trajectory');
const trajectorySteps = byTestId('trajectory-steps');
const trajectoryFinal = byTestId('trajectory-final');
const trajectoryCaption = byTestId('trajectory-caption');
const statusText = byTestId('status-text');
const statusBox = byTestId('status');
const progress = byTestId('progress');
const banner = byTestId('error-banner');
const plotBox = byTestId('divergence-plot');
const summary = byTestId('summary');
const downloadPng = byTestId('download-png');
const downloadJson = byTestId('download-json');
const trunkChip = byTestId('trunk-chip');
const curvePanel = byTestId('curve');
const curveTrunks = byTestId('curve-trunks');
const gridStop = byTestId('grid-stop');
const runButton = byTestId('run');
const curveRun = byTestId('curve-run');
const curveCancel = byTestId('curve-cancel');
const curveProgress = byTestId('curve-progress');
const curveStatus = byTestId('curve-status');
const curveStatusBox = byTestId('curve-status-box');
const curvePlotBox = byTestId('curve-plot');
const curveCaption = byTestId('curve-caption');
const curveJudge = byTestId('curve-judge');
const curveTokensNote = byTestId('curve-tokens-note');
const curveDownloadPng = byTestId('curve-download-png');
const curveDownloadSvg = byTestId('curve-download-svg');
const curveDownloadJson = byTestId('curve-download-json');

const TOKEN_KEY = 'dgrid-token';
const DEFAULT_TRAJECTORY_CAPTION = trajectoryCaption.innerHTML;

let models = [];
let modelsLoaded = false;
let modelsLoading = null;  // the fetch of the models under way, or the last
// The URL's model, prompt and switch prompt, applied once the models are known.
let wantedModel = null;
let wantedPrompt = null;
let wantedSwitch = null;
// Which prompt control is shown: 'class' (the list) or 'text' (the box).
let promptKind = 'class';
// The promoted path of the form's state (null: the seed's own trunk).
let formTrunk = null;
// The query string of the view on screen (see the popstate handler).
let viewSearch = location.search;
// A view named by the URL that waits for the models (e.g. for a token).
let pendingView = null;
// The grid on screen: its state, request, plan, cells and trunk previews.
let view = null;
let runCounter = 0;
let abortRun = null;
// The run the Stop button stopped (its id), so that its end is told as such.
let stoppedRun = null;
let jsonUrl = null;
// The decision curve running (its AbortController), and which run is the
// latest: events of an older one are dropped.
let abortCurve = null;
let curveCounter = 0;
// The last curve that finished, {run, curve}: shown dimmed after a failed or
// cancelled one.
let lastCurve = null;
let curveJsonUrl = null;
// Promotion by keyboard: the cell position that gets focus back when the
// new grid is in (null: leave focus alone).
let refocusCell = null;

// ---------- small helpers ----------

const pngSrc = (base64) => `data:image/png;base64,${base64}`;
const cellKey = (row, col) => `${row},${col}`;

function image(base64, alt, testId) {
  const img = document.createElement('img');
  img.src = pngSrc(base64);
  img.alt = alt;
  img.draggable = false;
  if (testId) img.dataset.testid = testId;
  return img;
}

function placeholder(text) {
  const span = document.createElement('span');
  span.className = 'placeholder';
  span.textContent = text;
  return span;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function formatNumber(value, digits = 2) {
  return Number(value ?? 0).toFixed(digits).replace(/\.?0+$/, '');
}

// "1 branch", "4 branches".
function plural(count, one, many) {
  return `${count} ${Number(count) === 1 ? one : many}`;
}

// Seconds as a status reads them: "under 0.1 s" rather than "0 s".
function formatSeconds(seconds) {
  return Number(seconds ?? 0) < 0.05 ? 'under 0.1 s' : `${formatNumber(seconds, 1)} s`;
}

// A download's name from a plan: model, prompt, switch prompt, then `tail`.
function downloadBase(prefix, plan, tail) {
  // Free text can be long: the start of it names the file.
  const prompt = (plan.prompt || 'unconditional').slice(0, 40);
  const switched = plan.switch_prompt ? `-to-${plan.switch_prompt.slice(0, 30)}` : '';
  return `${prefix}-${plan.model ?? 'model'}-${prompt}${switched}-${tail}`.replace(/[^\w.-]+/g, '_');
}

// A plan's sampler (SamplerConfig.sampler, by its JSON name) as text shows
// it. Unspecified, left out of the JSON, is DDIM.
function samplerName(sampler) {
  return sampler === 'SAMPLER_EULER_ANCESTRAL' ? 'Euler ancestral' : 'DDIM';
}

// ---------- errors ----------

// Hides `node`; the keyboard focus inside it goes on to `next`, not to the
// page's body.
function hideKeepingFocus(node, next) {
  const focused = node.contains(document.activeElement);
  node.hidden = true;
  if (focused) next.focus();
}

// The server names a request's fields; the page's boxes have labels of
// their own.
// The request's fields (the server's names) and the form's own ones (its
// checks' names), by the box each is.
const BOX_OF_FIELD = new Map(Object.entries({
  model: 'Model', prompt: 'Prompt', negative_prompt: 'Negative prompt', switch_prompt: 'Switch to',
  switch_negative_prompt: 'Switch negative prompt', seed: 'Seed', preset: 'Preset', steps: 'Steps',
  eta: 'Eta', guidance: 'Guidance', spacing: 'Spacing', sampler: 'Sampler',
  size: 'Original size, crop, target size', original: 'Original size', crop: 'Crop',
  target: 'Target size', branch_noise: 'Branch noise', branch_steps: 'Rows', rows: 'Rows',
  branches: 'Columns', columns: 'Columns', trunks: 'Trunks',
}));

// Only a message that begins with a field's name and says what is wrong
// with it ("steps must be ...", "columns: not a number").
function inPageTerms(message) {
  // The gateway's own refusals of the JSON begin "request body: ".
  return message
      .replace(/^request body: (?=(grid\.)?[a-z_]+(\[\d+\])?(:| must\b| is\b))/, '')
      .replace(/^(grid\.)?branch_steps\[(\d+)\]/, (_, grid, i) => `Rows (entry ${Number(i) + 1})`)
      // A promoted trunk's path, which no box shows but the trunk chip.
      .replace(/^(grid\.)?trunk\.segments\[(\d+)\](\.[a-z_.]+)?(?=:| must\b| is\b)/,
          (_, grid, i) => `Promoted trunk (its segment ${Number(i) + 1})`)
      .replace(/^(grid\.)?([a-z_]+)(?=:| must\b| is\b)/,
          (whole, grid, field) => BOX_OF_FIELD.get(field) ?? whole);
}

// source 'models': the list of models could not be loaded (a token is
// missing, say); loading them later clears only that error.
function showError(error, source = 'grid') {
  banner.dataset.source = source;
  const code = error.code || (error instanceof ApiError ? 'ERROR' : 'PAGE ERROR');
  let message = inPageTerms(error.message || String(error));
  if (code === 'UNAUTHENTICATED') message += ' (this orchestrator wants a token: see the Token field)';
  byTestId('error-code').textContent = code;
  byTestId('error-message').textContent = message;
  banner.hidden = false;
}

function clearError(source) {
  if (!source || banner.dataset.source === source) hideKeepingFocus(banner, runButton);
}

// ---------- models and controls ----------

function currentModel() {
  return models.find((model) => model.name === controls.model.value) ?? models[0];
}

const isText = (model) => model?.conditioning === 'text';
const modelOf = (plan) => models.find((model) => model.name === plan?.model);

// A prompt as labels show it: free text quoted, a class name as it is.
function promptName(prompt, model) {
  if (!prompt) return 'unconditional';
  return isText(model) ? `“${prompt}”` : prompt;
}

// What a path segment switches to: a class (by index), or a prompt with
// its negative prompt when that differs from the grid's.
function conditioningName(conditioning, plan) {
  const model = modelOf(plan);
  if (conditioning.class_index !== undefined) {
    return model?.prompts?.[conditioning.class_index] ?? `class ${conditioning.class_index}`;
  }
  const name = promptName(conditioning.prompt, model);
  const negative = conditioning.negative_prompt ?? '';
  if (negative === (plan?.negative_prompt ?? '')) return name;
  return negative ? `${name}, negative “${negative}”` : `${name}, no negative prompt`;
}

// What a grid's rows switch to, as a segment's conditioning: a switch
// without a negative prompt of its own keeps the grid's (SwitchConditioning,
// grid_plan.cc).
function switchConditioning(plan) {
  return {prompt: plan.switch_prompt,
    negative_prompt: plan.switch_negative_prompt || plan.negative_prompt || ''};
}

// Its name: the switch prompt (a class), with its negative prompt where
// that differs from the grid's (a switch of the negative prompt alone read
// as one to the same prompt).
function switchName(plan) {
  return conditioningName(switchConditioning(plan), plan);
}

// Whether the row at `step` switches, as the server planned it
// (GridPlan.switching_rows): not where the switch is unseen, nor where a
// promoted trunk has switched to the same prompt already.
function rowSwitches(plan, step) {
  const row = (plan.branch_steps ?? []).indexOf(step);
  return Boolean(plan.switching_rows?.[row]);
}

// Where a path's prompt changes, from its segments' conditioning:
// e.g. ["prompt → sneaker from step 5"].
function promptChanges(path, plan) {
  return (path?.segments ?? []).filter((segment) => segment.conditioning).map((segment) =>
    `prompt → ${conditioningName(segment.conditioning, plan)} from step ${segment.from_step ?? 0}`);
}

function fillModels() {
  const wanted = wantedModel ?? controls.model.value;
  wantedModel = null;
  controls.model.replaceChildren(...models.map((model) => {
    const option = new Option(model.name, model.name);
    option.title = model.description ?? '';
    return option;
  }));
  if (wanted && !models.some((model) => model.name === wanted)) {
    controls.model.append(new Option(`${wanted} (not served)`, wanted));
  }
  controls.model.value = wanted || (models[0]?.name ?? '');
  controls.model.disabled = controls.model.options.length <= 1;
  fillPrompts();
}

// The prompt control for the chosen model: its class names, or a text box.
function fillPrompts() {
  const model = currentModel();
  if (isText(model)) fillTextPrompt(model);
  else fillClassPrompts(model);
  wantedPrompt = null;
  wantedSwitch = null;
  fillPlaceholders();
  describeJudge(model);
  // Size conditioning: only for a model that takes it, with its defaults.
  const size = model?.default_size;
  sizeField.hidden = !size;
  controls.original.placeholder = size ? `${size.original_height}x${size.original_width}` : '';
  controls.target.placeholder = size ? `${size.target_height}x${size.target_width}` : '';
}

function fillClassPrompts(model) {
  const wanted = wantedPrompt ?? controls.prompt.value;
  // "unconditional" chosen before stays chosen (a fresh list starts on the
  // first class).
  const keepUnconditional = wanted === '' && controls.prompt.options.length > 0;
  const prompts = model?.prompts ?? [];
  const options = [new Option('unconditional', ''), ...prompts.map((p) => new Option(p, p))];
  controls.prompt.replaceChildren(...options);
  if (wantedPrompt !== null && wanted !== '' && !prompts.includes(wanted)) {
    controls.prompt.append(new Option(`${wanted} (unknown)`, wanted));
  }
  // A fresh page starts on the first class; the URL's choice wins.
  controls.prompt.value = wantedPrompt !== null || keepUnconditional || prompts.includes(wanted) ?
      wanted : (prompts[0] ?? '');
  // The switch starts off. The URL's choice wins, even a class the model
  // lacks (the server's message names it).
  const switchTo = wantedSwitch ?? controls.switch.value;
  controls.switch.replaceChildren(new Option('no switch', ''), ...prompts.map((p) => new Option(p, p)));
  if (wantedSwitch && !prompts.includes(wantedSwitch)) {
    controls.switch.append(new Option(`${wantedSwitch} (unknown)`, wantedSwitch));
  }
  controls.switch.value = wantedSwitch !== null || prompts.includes(switchTo) ? switchTo : '';
  showPromptKind('class');
}

// Free text, with the model's example prompts offered as suggestions. The
// URL's text wins; text typed for another text model stays; an empty box
// coming from a class model starts on the first example.
function fillTextPrompt(model) {
  const examples = model.example_prompts ?? [];
  promptExamples.replaceChildren(...examples.map((p) => new Option(p, p)));
  if (wantedPrompt !== null) controls.promptText.value = wantedPrompt;
  else if (promptKind !== 'text' && controls.promptText.value === '') controls.promptText.value = examples[0] ?? '';
  if (wantedSwitch !== null) controls.switchText.value = wantedSwitch;
  const tokens = model.max_prompt_tokens ?? 0;
  controls.promptText.placeholder = tokens ? `free text, up to ${tokens} tokens (empty: unconditional)` :
      'free text (empty: unconditional)';
  showPromptKind('text');
}

function showPromptKind(kind) {
  promptKind = kind;
  const text = kind === 'text';
  controls.prompt.hidden = text;
  controls.promptText.hidden = !text;
  controls.switch.hidden = text;
  controls.switchText.hidden = !text;
  negativeField.hidden = !text;
  switchNegativeField.hidden = !text;
  promptLabel.htmlFor = text ? 'prompt-text' : 'prompt';
  switchLabel.htmlFor = text ? 'switch-text' : 'switch';
}

const presetSteps = (preset) => preset === 'turbo' ? 4 : 50;

// Whether DDIM's last step adds noise, as the server decides it
// (DdimLastStepAddsNoise in common/timesteps.cc: change both together). The
// step goes train // steps below its timestep; below 0, to alpha-bar 1
// (set_alpha_to_one), which adds none, else to alpha-bar[0], which adds none
// from timestep 0 itself.
function ddimLastStepAddsNoise(steps) {
  const model = currentModel();
  const train = model?.train_timesteps || 1000;
  const modelSpacing = {SPACING_TRAILING: 'trailing', SPACING_LINSPACE: 'linspace'};
  const spacing = controls.spacing.value || modelSpacing[model?.defaults?.spacing] || 'leading';
  let last = model?.steps_offset ?? 0;  // leading spacing's last timestep
  if (spacing === 'linspace') {
    last = 0;  // np.linspace(0, train - 1, steps) reversed ends at 0
  } else if (spacing === 'trailing') {
    // np.round(np.arange(train, 0, -train / steps)) - 1, as common/timesteps.cc
    // computes it: its last value, rounded half to even.
    const value = train + (steps - 1) * ((train - train / steps) - train);
    let rounded = Math.round(value);
    if (value - Math.floor(value) === 0.5 && rounded % 2 !== 0) rounded -= 1;
    last = Math.min(Math.max(rounded - 1, 0), train - 1);
  }
  return last - Math.floor(train / steps) >= 0 || (!model?.set_alpha_to_one && last !== 0);
}

// The preset's rows for the typed steps, scaled as the server scales them
// (grid_plan.cc: round(k * steps / preset steps), each once, below steps).
function presetRows(preset) {
  const base = presetSteps(preset);
  const rows = preset === 'turbo' ? [0, 1, 2] : [0, 5, 10, 20, 30, 40];
  const typed = Number(controls.steps.value.trim());
  const steps = Number.isInteger(typed) && typed > 0 ? typed : base;
  // As the server makes them: short of a last step that adds no noise
  // (Euler ancestral's; DDIM's as ddimLastStepAddsNoise says), unless a
  // switch the model reads makes the branches differ.
  const sampler = controls.sampler.value ||
      (preset === 'euler_a' || preset === 'turbo' ? 'euler_ancestral' : 'ddim');
  const noiseless = sampler === 'euler_ancestral' || !ddimLastStepAddsNoise(steps);
  const end = noiseless && !switchSeen() ? steps - 1 : steps;
  const scaled = [];
  for (const k of rows) {
    const s = Math.round(k * steps / base);
    if (s < end && (scaled.length === 0 || s > scaled[scaled.length - 1])) scaled.push(s);
  }
  return {rows: scaled, steps};
}

// A grid's steps, eta and rows are its preset's unless set (the model's own
// defaults are for single trajectories: with its eta 0 every branch would be
// the trunk); guidance is the model's.
function fillPlaceholders() {
  const defaults = currentModel()?.defaults ?? {};
  const preset = controls.preset.value;
  controls.steps.placeholder = String(presetSteps(preset));
  controls.eta.placeholder = '1';
  controls.guidance.placeholder = formatNumber(defaults.guidance ?? 1);
  const {rows, steps} = presetRows(preset);
  // classic's rows are where the trunk has run the first timestep at or
  // below each (20 steps run 901, 801, 701).
  controls.rows.placeholder = preset === 'classic' ? 'preset: first t ≤ 921, 821, 701' :
      `preset: ${rows.join(',')} of ${steps}`;
  // With the trunk's noise every branch of a row is the same: one column.
  controls.cols.placeholder = controls.noise.value === 'trunk' ? '1' : '4';
}

// Fetches the models (again: a new token may see them); whether they came.
function loadModels() {
  modelsLoading = (async () => {
    try {
      models = await fetchModels({token: controls.token.value.trim()});
      modelsLoaded = true;
      fillModels();
      clearError('models');
      return true;
    } catch (error) {
      showError(error, 'models');
      return false;
    }
  })();
  return modelsLoading;
}

// Whether the models are here, waiting for a fetch under way (or making
// one): a form read before they come has no model or prompt, and a shared
// link's grid would run, and be written to the URL, without them.
async function modelsReady() {
  if (modelsLoaded) return true;
  if (modelsLoading && (await modelsLoading)) return true;
  return loadModels();  // none under way, or the last failed: once more
}

// fresh: a page with no view in its URL, where a model and prompt it does
// not name stay as the form has them (the first model and its first class
// on a new page).
function fillControls(state, {fresh = false} = {}) {
  for (const field of FIELDS) {
    if (field === 'prompt' || field === 'model' || field === 'switch') continue;
    const control = controls[field];
    // A link's value a list does not offer (?preset=bogus): shown as it is,
    // so that the form is the request the server refused; the list alone
    // showed its first entry, and Run grid ran that instead. Such an entry
    // lasts until the next view is shown.
    if (control.tagName === 'SELECT') {
      for (const option of [...control.options]) {
        if (option.dataset.unknown) option.remove();
      }
      if (state[field] && ![...control.options].some((option) => option.value === state[field])) {
        const option = new Option(`${state[field]} (unknown)`, state[field]);
        option.dataset.unknown = '1';
        control.append(option);
      }
    }
    control.value = state[field];
  }
  // A link without a view (no seed) still names its model and prompts, as
  // it names its other fields; left out, they keep their defaults.
  wantedModel = fresh ? state.model || null : state.model;
  wantedPrompt = fresh ? state.prompt || null : state.prompt;
  wantedSwitch = fresh ? state.switch || null : state.switch;
  if (modelsLoaded) fillModels();
  fillPlaceholders();
  setFormTrunk(state.trunk);
}

// The switch prompt the form shows: the list's for a class model, the box's
// for a text model.
function switchPrompt() {
  return promptKind === 'text' ? controls.switchText.value.trim() : controls.switch.value;
}

// Whether the form asks for a switch: a switch prompt, or a switch negative
// prompt alone (to the same prompt, requestFromState).
function switches() {
  return Boolean(switchPrompt() ||
      (promptKind === 'text' && controls.switchNegative.value.trim()));
}

// Whether the form's switch changes what the model reads, as the planner
// decides (ReadAlike, grid_plan.cc): another prompt (class) or negative
// prompt, where the guidance reads it (0 reads only the negative prompt, 1
// only the prompt). The server also plans a switch whose tokens read alike
// (another case, other spaces) as none, which the page cannot tell.
function switchSeen() {
  if (!switches()) return false;
  const text = promptKind === 'text';
  const prompt = text ? controls.promptText.value.trim() : controls.prompt.value;
  const to = switchPrompt() || prompt;
  if (!to) return false;
  const negative = text ? controls.negative.value.trim() : '';
  const toNegative = text ? controls.switchNegative.value.trim() || negative : '';
  const typed = controls.guidance.value.trim();
  const guidance = typed !== '' && Number.isFinite(Number(typed)) ? Number(typed) :
      currentModel()?.defaults?.guidance ?? 1;
  const readsAlike = (toPrompt, toNeg) =>
    (to === toPrompt || guidance === 0) && (toNegative === toNeg || guidance === 1);
  if (!readsAlike(prompt, negative)) return true;
  // Seen too where it reads otherwise than one of a promoted trunk's own
  // switches (grid_plan.cc, ReadsAlikeTheTrunksSwitches).
  const index = currentModel()?.prompts?.indexOf(to) ?? -1;
  return (formTrunk?.segments ?? []).some(({conditioning: c}) => c && (text ?
    !readsAlike(c.prompt ?? '', c.negative_prompt ?? '') :
    !(guidance === 0 || c.class_index === index || c.prompt === to)));
}

function stateFromControls() {
  const state = emptyState();
  for (const field of FIELDS) state[field] = controls[field].value.trim();
  // A text model's prompts are free text; fields the model's form hides go.
  if (promptKind === 'text') {
    state.prompt = controls.promptText.value.trim();
    state.switch = controls.switchText.value.trim();
  }
  // One spelling per seed ("007" ran, and was linked and named, as 007).
  if (/^\d+$/.test(state.seed)) {
    state.seed = BigInt(state.seed).toString();
    controls.seed.value = state.seed;
  }
  state.trunk = formTrunk;
  return forItsModel(state);
}

// A state as its model's form sends it: the fields the form hides for that
// model dropped (a link with a class model's negative prompt, or a size for
// a model without size conditioning, was refused for a field the page does
// not show).
function forItsModel(state) {
  const model = models.find((m) => m.name === state.model) ?? models[0];
  if (!model) return state;
  const out = {...state};
  if (!isText(model)) out.negative = out.switchNegative = '';
  if (!model.default_size) out.original = out.crop = out.target = '';
  return out;
}

function setFormTrunk(path) {
  formTrunk = path ?? null;
  if (formTrunk) trunkChip.hidden = false;
  else hideKeepingFocus(trunkChip, controls.seed);
  byTestId('trunk-chip-path').textContent = formTrunk ? encodePath(formTrunk) : '';
}

// ---------- running a grid ----------

function setGridState(state) {
  gridBox.dataset.state = state;
  document.body.dataset.gridState = state;
}

// Whether the grid on screen gets no more images: done, stopped or failed
// (what has not come shows as missing, not as on its way).
function settled() {
  return Boolean(view?.grid) || ['cancelled', 'error'].includes(gridBox.dataset.state);
}

// A stopped or failed grid's cells that never came say so.
function markMissing(why) {
  for (const button of gridBox.querySelectorAll('[data-testid="cell"][disabled]')) {
    const label = button.getAttribute('aria-label') ?? '';
    button.setAttribute('aria-label', label.replace(/: waiting$/, `: not drawn (${why})`));
  }
  renderTrajectory(currentFocus());
}

// While a grid streams its status is busy: a screen reader announces where
// it ended (done, stopped, an error), not every image on the way.
function setStatus(text, fraction, {streaming = false} = {}) {
  statusBox.setAttribute('aria-busy', String(streaming));
  statusText.textContent = text;
  progress.hidden = fraction === undefined;
  if (fraction !== undefined) progress.value = fraction;
}

// Runs the grid of `state`. mode: 'push' adds a history entry (a new view),
// 'replace' rewrites the current one, 'none' leaves the URL (it already
// names this view: start-up and Back/Forward).
// refocus: the cell of a keyboard promotion, focused again once it is done.
async function run(state, mode, {refocus = null} = {}) {
  // Whatever runs now is the view: a link still waiting for the models
  // (Dice, Back, or the trunk cleared meanwhile) must not run after it.
  pendingView = null;
  if (mode === 'none') state = forItsModel(state);
  clearError();
  let request;
  try {
    request = requestFromState(state);
  } catch (error) {
    showError(error);
    // A grid still streaming goes on, and keeps its state and status.
    if (gridBox.dataset.state !== 'streaming') {
      setGridState('error');
      // The message itself: on a phone the banner is out of sight.
      setStatus(`Not run: ${inPageTerms(error.message || String(error))}`);
    }
    return;
  }
  refocusCell = refocus;
  // The URL names the view once the server took its request (its plan): a
  // request it refuses leaves the URL, and the history, to the grid still
  // on screen.
  // Not once the user has gone elsewhere meanwhile (Back to a link that
  // fails to read, which runs nothing): the URL is theirs.
  const search = searchFromState(state);
  const from = location.search;
  let named = mode === 'none';
  // The query string of this run's history entry, once it has one.
  const ownSearch = () => (mode === 'none' ? from : search);
  const nameView = () => {
    if (named || location.search !== from) return;
    named = true;
    if (mode === 'push' && search !== location.search) history.pushState(null, '', search);
    else if (search !== location.search) history.replaceState(null, '', search);
    viewSearch = location.search;
    showLinkNote();
  };
  if (mode === 'none') showLinkNote();

  abortRun?.abort();
  const controller = new AbortController();
  abortRun = controller;
  const id = ++runCounter;
  const previous = view;
  view = {id, state, request, plan: null, cells: new Map(), trunk: null, previews: new Map(),
    grid: null, trunkStep: 0};
  setGridState('streaming');
  gridBox.classList.add('stale');
  resetExports();
  showTokensNote(null);
  setStatus('Planning…', 0, {streaming: true});
  runButton.textContent = 'Running…';
  gridStop.hidden = false;
  // On a narrow screen the form comes first and the grid below it, out of
  // sight: the status, which reports the grid as it streams, comes into view.
  if (mode !== 'none' && statusBox.getBoundingClientRect().top > window.innerHeight) {
    statusBox.scrollIntoView({block: 'start', behavior: 'smooth'});
  }

  try {
    const grid = await streamGrid(request, {
      token: controls.token.value.trim(),
      signal: controller.signal,
      onEvent: (name, payload) => {
        if (id !== runCounter) return;
        if (name === 'plan') {
          nameView();
          // This entry holds a grid that runs now, not one stopped (Run grid
          // on a stopped one, a reload of it, a promotion to the same view).
          if (history.state?.stopped && location.search === ownSearch()) history.replaceState(null, '');
        }
        onGridEvent(name, payload);
      },
    });
    if (id !== runCounter) return;
    nameView();
    finish(grid);
  } catch (error) {
    if (id === runCounter) refocusCell = null;
    if (id === runCounter && stoppedRun === id) {
      // Stopped by the user: the server cancels the grid (its client went
      // away); the cells that came stay on screen.
      setGridState('cancelled');
      gridBox.classList.remove('stale');
      if (!view.plan && previous) {
        // Before its plan: the previous grid is what the screen shows.
        keepPrevious(previous, 'stopped');
        setStatus('Stopped before the new grid was planned; the previous grid is shown.');
        return;
      }
      if (!view.plan) {
        setStatus('Stopped before the grid was planned.');
        return;
      }
      markMissing('stopped');
      // Back or Forward to this entry must not run the grid again whole.
      if (named && location.search === ownSearch()) history.replaceState({stopped: true}, '');
      const total = (view.plan?.branch_steps?.length ?? 0) * (view.plan?.branches ?? 0) + 1;
      const done = view.cells.size + (view.trunk ? 1 : 0);
      setStatus(`Stopped after ${done} of ${total} images.`);
      return;
    }
    if (id !== runCounter || error.name === 'AbortError') return;
    showError(error);
    setGridState('error');
    gridBox.classList.remove('stale');
    if (view.plan) markMissing('the grid failed');
    // Refused before its plan: the previous grid is still on screen, so it
    // stays the one that hover, promotion and the exports act on.
    if (!view.plan && previous) keepPrevious(previous, 'stopped');
    setStatus(`No grid: ${inPageTerms(error.message)}`);
  } finally {
    if (id === runCounter) {
      runButton.textContent = 'Run grid';
      hideKeepingFocus(gridStop, runButton);
    }
  }
}

function onGridEvent(name, payload) {
  if (name === 'plan') {
    view.plan = payload;
    buildGrid(payload);
    showTokensNote(payload);
  } else if (name === 'trunk') {
    const step = payload.step ?? 0;
    view.previews.set(step, {xt: payload.xt_png, x0: payload.x0_png});
    view.trunkStep = Math.max(view.trunkStep, step);
    renderTrajectory(currentFocus());
  } else if (name === 'cell') {
    addCell(payload);
  }
  if (name !== 'grid') updateProgress();
}

// A text model reads a bounded number of tokens, and a word vocabulary reads
// a word it lacks as unknown: say so, since the grid (or curve) then shows
// less than the prompt says.
function showTokensNote(plan, note = tokensNote) {
  const cut = [];
  const tokens = (n) => `${n} token${n === 1 ? '' : 's'}`;
  for (const [field, what] of [['prompt_tokens_dropped', 'the prompt'],
                               ['negative_prompt_tokens_dropped', 'the negative prompt'],
                               ['switch_prompt_tokens_dropped', 'the switch prompt'],
                               ['switch_negative_prompt_tokens_dropped',
                                'the switch negative prompt']]) {
    const n = plan?.[field] ?? 0;
    if (n > 0) cut.push(`its last ${tokens(n)} of ${what}`);
  }
  const unknown = plan?.unknown_words ?? [];
  note.hidden = cut.length === 0 && unknown.length === 0;
  const notes = [];
  if (cut.length > 0) {
    const max = models.find((model) => model.name === plan.model)?.max_prompt_tokens;
    notes.push(`${cut.length > 1 ? 'Prompts are' : 'A prompt is'} too long for ${plan.model}` +
        (max ? ` (it reads ${max} tokens)` : '') + `: it dropped ${cut.join(' and ')}.`);
  }
  if (unknown.length > 0) {
    // The words of every prompt, the negative ones included.
    const one = unknown.length === 1;
    notes.push(`${plan.model} does not know ${unknown.map((word) => `“${word}”`).join(', ')} ` +
        `(in the prompts): it reads ${one ? 'it' : 'each'} as an unknown word ` +
        '(its example prompts show words it knows).');
  }
  note.textContent = notes.join(' ');
}

function updateProgress() {
  if (!view.plan) return;
  const total = (view.plan.branch_steps?.length ?? 0) * (view.plan.branches ?? 0) + 1;
  const done = view.cells.size + (view.trunk ? 1 : 0);
  const steps = view.plan.sampler?.steps ?? 0;
  const trunkAt = view.trunk ? 'trunk done' : `trunk at step ${view.trunkStep} of ${steps}`;
  setStatus(`Streaming: ${done} of ${total} images · ${trunkAt}`, done / total, {streaming: true});
}

// A run that ended before its plan leaves the previous grid on screen: it
// is again the one hover, promotion and the exports act on.
// The gateway reads a request line of at most 8 KiB (414 past it): a view
// whose link is longer (a promoted text path's prompts, repeated per switch)
// cannot be reloaded or shared. Its Grid JSON keeps the request.
const MAX_LINK_BYTES = 8 << 10;
function showLinkNote() {
  // The query string is percent-encoded: a character is a byte.
  const bytes = `GET ${location.pathname}${location.search} HTTP/1.1`.length;
  linkNote.hidden = bytes <= MAX_LINK_BYTES;
  linkNote.textContent = linkNote.hidden ? '' :
    `This view's link is ${(bytes / 1024).toFixed(1)} KiB, past the 8 KiB a server reads in a ` +
    'request line: reloading or sharing it will fail. Its Grid JSON keeps the request (dgrid ' +
    'promote and the Python client read it).';
}

function keepPrevious(previous, why) {
  view = previous;
  showTokensNote(view.plan);
  if (view.grid) renderExports(view.grid);
  // A grid stopped by the new one, partly drawn: its missing cells say so.
  else if (view.plan) markMissing(why);
}

function finish(grid) {
  view.grid = grid;
  if (!view.plan) {
    buildGrid(grid.plan);
    showTokensNote(grid.plan);
  }
  if (grid.trunk) addCell(grid.trunk);
  (grid.rows ?? []).forEach((row, index) => {
    if (row.trunk_xt_png || row.trunk_x0_png) {
      view.previews.set(row.branch_step ?? 0, {xt: row.trunk_xt_png, x0: row.trunk_x0_png});
    }
    for (const cell of row.cells ?? []) addCell({...cell, row: cell.row ?? index});
  });
  renderTrajectory(currentFocus());
  renderDivergence(grid);
  renderExports(grid);
  setGridState('done');
  const total = view.cells.size + 1;
  setStatus(`Done: ${total} images in ${formatNumber(grid.seconds, 2)} s · ` +
      `${grid.model_evals ?? 0} model evaluations, ${grid.cache_hits ?? 0} cache hits`, 1);
  if (refocusCell) {
    const {row, col} = refocusCell;
    refocusCell = null;
    (gridBox.querySelector(`[data-testid="cell"][data-row="${row}"][data-col="${col}"]:not([disabled])`) ??
        gridBox).focus();
  }
}

// ---------- the grid ----------

function rowLabel(plan, row) {
  const step = plan.branch_steps?.[row] ?? 0;
  const timestep = plan.timesteps?.[row] ?? 0;
  return {step, timestep};
}

// A row's step as its label says it: "step 5", or in a grid that switches
// prompts "→ sneaker after step 5", the prompt on a line of its own that a
// long text may cut (the label's title has all of it). Only rows that
// switch say so (GridPlan.switching_rows).
function rowStep(plan, step) {
  const node = element('span', 'row-step');
  if (!rowSwitches(plan, step)) {
    node.textContent = `step ${step}`;
    return node;
  }
  node.append(element('span', 'row-switch', `→ ${switchName(plan)}`), ` after step ${step}`);
  return node;
}

// The rows that do not switch, the trunk having switched already.
function alreadyNote(plan) {
  const already = (plan.branch_steps ?? []).filter((step) => !rowSwitches(plan, step));
  return already.length === 0 ? '' :
    `, but not after step ${already.join(', ')}: the trunk has switched already`;
}

// "branch 3" needs about 64 px; narrower columns (many, or a phone) are
// numbered alone. Again as the window's width changes.
function labelColumns() {
  const heads = gridBox.querySelectorAll('.col-head');
  const numbersOnly = heads.length > 8 || gridBox.clientWidth / (heads.length + 1) < 64;
  heads.forEach((head, col) => {
    head.textContent = numbersOnly ? String(col + 1) : `branch ${col + 1}`;
  });
}
window.addEventListener('resize', labelColumns);

function buildGrid(plan) {
  // A first tap on the new grid shows, whatever the old one showed; and a
  // tap's cell (a finger never leaves the grid) is not the new one's focus.
  tapped = null;
  hovered = null;
  const rows = plan.branch_steps?.length ?? 0;
  const cols = plan.branches ?? 0;
  gridBox.classList.remove('stale');
  gridBox.style.setProperty('--cols', String(cols));
  const nodes = [element('div', 'corner', 'after step')];
  for (let col = 0; col < cols; col++) {
    const head = element('div', 'col-head');
    head.setAttribute('aria-hidden', 'true');
    nodes.push(head);
  }
  for (let row = 0; row < rows; row++) {
    const {step, timestep} = rowLabel(plan, row);
    const label = element('div', 'row-label');
    label.dataset.testid = 'row-label';
    label.dataset.row = String(row);
    const stepNode = rowStep(plan, step);
    if (plan.switch_prompt) label.title = stepNode.textContent;
    label.append(stepNode, element('span', 'row-t', `t = ${timestep}`));
    nodes.push(label);
    for (let col = 0; col < cols; col++) {
      const button = element('button', 'cell');
      button.type = 'button';
      button.disabled = true;
      button.dataset.testid = 'cell';
      button.dataset.row = String(row);
      button.dataset.col = String(col);
      button.setAttribute('aria-label',
          `Row ${row + 1}, after step ${step} (t = ${timestep}), branch ${col + 1}: waiting`);
      button.append(placeholder(''));
      nodes.push(button);
    }
  }
  const focused = gridBox.contains(document.activeElement);
  gridBox.replaceChildren(...nodes);
  labelColumns();
  if (focused) gridBox.focus();  // the old cells are gone
  trunkFrame.replaceChildren(placeholder('trunk'));
  trunkFigure.dataset.path = encodePath(plan.trunk ?? {});
  delete trunkFigure.dataset.loaded;
  const changes = promptChanges(plan.trunk, plan);
  // The request named a trunk: a row-0 branch's path has one segment, as
  // the seed's own trunk has.
  const promoted = Boolean(view?.request?.trunk) || changes.length > 0;
  trunkCaption.textContent = promoted ? ['a promoted branch', ...changes].join(' · ') :
      `seed ${plan.trunk?.init_seed ?? 0}`;
  renderTrajectory(null);
  plotBox.replaceChildren(element('p', 'empty', 'The plot appears when the grid is complete.'));
}

function addCell(cell) {
  const row = cell.row ?? 0;
  const col = cell.column ?? 0;
  if (row < 0) {
    view.trunk = cell;
    trunkFrame.replaceChildren(image(cell.png, 'The trunk’s final image', 'trunk-image'));
    trunkFigure.dataset.loaded = 'true';
    trunkFigure.dataset.path = encodePath(cell.path ?? {});
    renderTrajectory(currentFocus());
    return;
  }
  const button = gridBox.querySelector(`[data-testid="cell"][data-row="${row}"][data-col="${col}"]`);
  if (!button) return;
  view.cells.set(cellKey(row, col), cell);
  if (button.dataset.loaded === 'true') return;
  const {step, timestep} = rowLabel(view.plan, row);
  button.replaceChildren(image(cell.png, '', 'cell-image'));
  button.disabled = false;
  // One Tab stop for the whole grid (the arrow keys move within it): a
  // 16 × 9 grid took 145 presses of Tab to pass.
  button.tabIndex = gridBox.querySelector('[data-testid="cell"][tabindex="0"]') ? -1 : 0;
  button.dataset.loaded = 'true';
  button.dataset.path = encodePath(cell.path ?? {});
  // A cell whose path is the trunk's (a promoted cell in its own row) is
  // the trunk again, not a branch of it: marked, as nothing told it apart.
  const isTrunk = Boolean(view.plan?.trunk) && button.dataset.path === encodePath(view.plan.trunk);
  if (isTrunk) button.dataset.trunk = 'true';
  const changes = promptChanges(cell.path, view.plan);
  button.title = [isTrunk ? 'The trunk itself (its path is the trunk’s)' :
    `Promote to trunk (from ${cell.source || 'unknown'})`, ...changes].join('\n');
  const switched = changes.length ? ` (${changes.join(', ')})` : '';
  button.setAttribute('aria-label',
      `Row ${row + 1}, after step ${step} (t = ${timestep}), branch ${col + 1}${switched}: ` +
      (isTrunk ? 'the trunk itself' : 'promote to trunk'));
}

// The cell under the pointer, else the focused one, else none (the trunk).
let hovered = null;

function cellOf(node) {
  const button = node?.closest?.('[data-testid="cell"]');
  if (!button || button.dataset.loaded !== 'true') return null;
  return {row: Number(button.dataset.row), col: Number(button.dataset.col)};
}

function currentFocus() {
  return hovered ?? cellOf(document.activeElement);
}

gridBox.addEventListener('pointerover', (event) => {
  const cell = cellOf(event.target);
  if (!cell) return;
  hovered = cell;
  renderTrajectory(cell);
});
gridBox.addEventListener('pointerleave', () => {
  hovered = null;
  renderTrajectory(currentFocus());
});
gridBox.addEventListener('focusin', (event) => {
  const cell = cellOf(event.target);
  if (!cell) return;
  // The grid's Tab stop follows the focus, so Tab comes back to it.
  for (const other of gridBox.querySelectorAll('[data-testid="cell"][tabindex="0"]')) {
    other.tabIndex = -1;
  }
  event.target.closest('[data-testid="cell"]').tabIndex = 0;
  if (!hovered) renderTrajectory(cell);
});
gridBox.addEventListener('focusout', () => {
  // activeElement is not yet the next element here; look after the move.
  setTimeout(() => renderTrajectory(currentFocus()), 0);
});
// A touch screen has no hover: a first tap on a branch shows its trajectory,
// a second tap on it promotes it (a tap once promoted at once, so a phone
// never showed a branch's trajectory).
let touchPointer = false;
let tapped = null;
gridBox.addEventListener('pointerdown', (event) => {
  touchPointer = event.pointerType === 'touch';
});
gridBox.addEventListener('click', (event) => {
  const cell = cellOf(event.target);
  if (!cell) return;
  // detail is 0 for a click made with the keyboard (Enter or Space).
  const byKeyboard = event.detail === 0;
  if (touchPointer && !byKeyboard && (tapped?.row !== cell.row || tapped?.col !== cell.col)) {
    tapped = cell;
    hovered = cell;
    renderTrajectory(cell);
    return;
  }
  tapped = null;
  promote(cell, byKeyboard);
});
gridBox.addEventListener('keydown', (event) => {
  const cell = cellOf(event.target);
  if (!cell) return;
  const moves = {ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0]};
  let next = null;
  if (moves[event.key]) {
    const [dr, dc] = moves[event.key];
    // Past cells that never came (a stopped or failed grid), to the next one
    // that did, as far as the grid goes.
    const at = (r, c) => gridBox.querySelector(`[data-testid="cell"][data-row="${r}"][data-col="${c}"]`);
    next = at(cell.row + dr, cell.col + dc);
    for (let r = cell.row + dr, c = cell.col + dc; next?.disabled; r += dr, c += dc) {
      next = at(r + dr, c + dc);
    }
  } else if (event.key === 'Home' || event.key === 'End') {
    // As a data grid's keys go: the row's first or last cell that came,
    // with Ctrl the whole grid's.
    const row = event.ctrlKey ? '' : `[data-row="${cell.row}"]`;
    const came = gridBox.querySelectorAll(`[data-testid="cell"]${row}:not([disabled])`);
    next = came[event.key === 'Home' ? 0 : came.length - 1] ?? null;
  }
  if (next) {
    event.preventDefault();
    next.focus();
  }
});

function promote({row, col}, byKeyboard) {
  const cell = view?.cells.get(cellKey(row, col));
  if (!cell?.path) return;
  // The trunk itself (a promoted cell in its own row): promoting it would
  // run the grid on screen again.
  if (view.plan?.trunk && encodePath(cell.path) === encodePath(view.plan.trunk)) return;
  const state = {...view.state, trunk: cell.path};
  fillControls(state);
  hovered = null;
  run(state, 'push', {refocus: byKeyboard ? {row, col} : null});
}

// ---------- the trajectory panel ----------

function frame(base64, alt, fallback) {
  const box = element('div', 'frame');
  box.append(base64 ? image(base64, alt) : placeholder(fallback));
  return box;
}

function renderTrajectory(focus) {
  const plan = view?.plan;
  trajectory.dataset.focus = focus ? cellKey(focus.row, focus.col) : 'trunk';
  if (!plan) {
    trajectorySteps.replaceChildren();
    trajectoryFinal.replaceChildren();
    return;
  }
  const items = (plan.branch_steps ?? []).map((step, row) => {
    const timestep = plan.timesteps?.[row] ?? 0;
    const preview = view.previews.get(step);
    const item = element('li', 'traj-step');
    item.dataset.testid = 'traj-step';
    item.dataset.row = String(row);
    const applies = !focus || row <= focus.row;
    item.classList.toggle('dimmed', !applies);
    item.classList.toggle('branch-point', Boolean(focus) && row === focus.row);
    if (!applies) item.setAttribute('aria-hidden', 'true');
    const label = element('div', 'traj-label');
    label.append(element('span', 'row-step', `step ${step}`), element('span', 'row-t', `t = ${timestep}`));
    const pending = settled() ? '–' : '…';
    const xt = frame(preview?.xt, `x_t at step ${step}`, step === 0 && !preview ? 'noise' : pending);
    const x0 = frame(preview?.x0, `predicted x0 at step ${step}`, step === 0 && !preview ? '–' : pending);
    xt.dataset.kind = 'xt';
    x0.dataset.kind = 'x0';
    item.append(label, xt, x0);
    return item;
  });
  const head = element('li', 'traj-head');
  head.setAttribute('aria-hidden', 'true');
  head.append(element('span', '', ''), element('span', '', 'xₜ'), element('span', '', 'x̂₀'));
  trajectorySteps.replaceChildren(head, ...items);

  const cell = focus ? view.cells.get(cellKey(focus.row, focus.col)) : view.trunk;
  const final = element('figure', 'final');
  final.append(frame(cell?.png, focus ? 'the branch’s final image' : 'the trunk’s final image',
      settled() ? '–' : '…'));
  const caption = element('figcaption');
  if (focus) {
    const {step, timestep} = rowLabel(plan, focus.row);
    caption.textContent = `row ${focus.row + 1}, branch ${focus.col + 1}`;
    const shared = step === 0 ? `shares only the trunk’s initial noise (t = ${timestep})` :
        `follows the trunk up to step ${step} (t = ${timestep})`;
    const own = plan.branch_noise === 'BRANCH_NOISE_TRUNK' ? 'This branch keeps the trunk’s noise throughout.' :
        `This branch ${shared}, then takes its own noise.`;
    const changes = promptChanges(cell?.path, plan);
    const prompt = changes.length ? ` Its ${changes.join(', ')}.` : '';
    trajectoryCaption.textContent = `${own}${prompt} The dimmed steps below are the trunk’s, not this branch’s.`;
  } else {
    caption.textContent = 'trunk';
    trajectoryCaption.innerHTML = DEFAULT_TRAJECTORY_CAPTION;
  }
  final.append(caption);
  final.querySelector('img')?.setAttribute('data-testid', 'trajectory-final-image');
  trajectoryFinal.replaceChildren(final);
}

// ---------- divergence and exports ----------

function renderDivergence(grid) {
  const rows = grid.rows ?? [];
  if (rows.length === 0) {
    plotBox.replaceChildren(element('p', 'empty', 'No rows.'));
    return;
  }
  const branches = grid.plan?.branches;
  plotBox.replaceChildren(divergencePlot(rows, grid.plan?.sampler?.steps ?? 0, branches), plotLegend(branches));
}

function resetExports() {
  for (const link of [downloadPng, downloadJson]) {
    link.removeAttribute('href');
    link.removeAttribute('download');
    link.setAttribute('aria-disabled', 'true');
  }
  summary.textContent = '';
}

// The grid without image bytes, as `dgrid grid` writes its sidecar
// (GridRecord): every path is there, so any cell can be re-run or promoted.
function withoutImages(grid) {
  const copy = structuredClone(grid);
  delete copy.png;
  if (copy.trunk) delete copy.trunk.png;
  for (const row of copy.rows ?? []) {
    delete row.trunk_xt_png;
    delete row.trunk_x0_png;
    for (const cell of row.cells ?? []) delete cell.png;
  }
  return copy;
}

function renderExports(grid) {
  const plan = grid.plan ?? {};
  const promoted = view?.request?.trunk ? '-promoted' : '';
  const base = downloadBase('dgrid', plan, `${plan.trunk?.init_seed ?? 0}${promoted}`);
  if (grid.png) {
    downloadPng.href = pngSrc(grid.png);
    downloadPng.download = `${base}.png`;
    downloadPng.removeAttribute('aria-disabled');
  }
  if (jsonUrl) URL.revokeObjectURL(jsonUrl);
  const record = {request: view.request, grid: withoutImages(grid)};
  jsonUrl = URL.createObjectURL(new Blob([JSON.stringify(record, null, 2)], {type: 'application/json'}));
  downloadJson.href = jsonUrl;
  downloadJson.download = `${base}.json`;
  downloadJson.removeAttribute('aria-disabled');

  const sampler = plan.sampler ?? {};
  const spacing = (sampler.spacing ?? 'SPACING_LEADING').replace('SPACING_', '').toLowerCase();
  const negative = plan.negative_prompt ? ` Negative prompt: “${plan.negative_prompt}”.` : '';
  const keep = plan.branch_noise === 'BRANCH_NOISE_TRUNK' ? ', keeping the trunk’s noise' : '';
  const switchTo = plan.switch_prompt ? switchName(plan) : '';
  const switched = !switchTo ? '' : plan.switch_unseen ?
      ` The switch to ${switchTo} changes nothing the model reads (the same class or tokens, or ` +
      'one this guidance does not read): the branches do not switch.' :
      ` Branches switch to ${switchTo} at their row’s step${keep}` + alreadyNote(plan) + '.';
  const size = plan.size;
  const sized = size ? ` Size ${size.original_height ?? 0}×${size.original_width ?? 0}, crop ` +
      `${size.crop_top ?? 0}×${size.crop_left ?? 0}, target ${size.target_height ?? 0}×${size.target_width ?? 0}.` : '';
  // eta and guidance as the plan holds them: rounded, 0.004 read "eta 0",
  // which the server refuses.
  summary.textContent = `${plural(plan.branch_steps?.length ?? 0, 'row', 'rows')} × ` +
      `${plural(plan.branches ?? 0, 'branch', 'branches')}, ` +
      `${samplerName(sampler.sampler)}, ${plural(sampler.steps ?? 0, 'step', 'steps')}, ` +
      `eta ${Number(sampler.eta ?? 0)}, guidance ${Number(sampler.guidance ?? 0)}, ` +
      `${spacing} spacing. ${grid.model_evals ?? 0} model evaluations run ` +
      `(plan ${plan.model_evals ?? 0}, every cell from scratch ${plan.from_scratch_evals ?? 0}).${negative}${switched}${sized}`;
}

// ---------- the decision curve ----------

// What the chosen model's judge reads, so that the panel says which curves
// the next run gives (a curve on screen names its own model).
function describeJudge(model) {
  const heads = model?.judge?.heads ?? [];
  const chosen = controls.model.value;
  if (!model) {
    curveJudge.textContent = '';
  } else if (chosen && chosen !== model.name) {
    curveJudge.textContent = `${chosen} is not served here: a curve of it would be refused.`;
  } else if (heads.length === 0) {
    curveJudge.textContent = `A curve of ${model.name} is its mean RMS divergence alone: it has no judge.`;
  } else {
    const names = heads.map((head) => `${head.name} (${head.labels?.length ?? 0} labels)`);
    curveJudge.textContent = `A curve of ${model.name} judges each image’s ${names.join(' and ')}.`;
  }
}

// While a curve runs its status is busy, as a grid's is: a screen reader
// announces how it ended, not every trunk.
function setCurveState(state, text, fraction) {
  curvePanel.dataset.state = state;
  curveStatusBox.setAttribute('aria-busy', String(state === 'running'));
  curveStatus.textContent = text;
  curveProgress.hidden = fraction === undefined;
  if (fraction !== undefined) curveProgress.value = fraction;
  const running = state === 'running';
  curveRun.textContent = running ? 'Running…' : 'Run curve';
  // Cancel stops a running curve; a second Run used to drop it unasked.
  curveRun.disabled = running;
  if (running) curveCancel.hidden = false;
  else hideKeepingFocus(curveCancel, curveRun);
}

function resetCurveExports() {
  for (const link of [curveDownloadPng, curveDownloadSvg, curveDownloadJson]) {
    link.removeAttribute('href');
    link.removeAttribute('download');
    link.setAttribute('aria-disabled', 'true');
  }
}

// Runs a curve of the form's grid (not the URL's: the form is what the
// user sees), from its seed; a promoted trunk is not used, since a curve's
// trunks are seeds.
async function runCurve() {
  if (curvePanel.dataset.state === 'running') return;
  if (!(await modelsReady())) return;
  // Run turns off while the curve runs: focus on it goes on to Cancel.
  const focusedRun = document.activeElement === curveRun;
  clearError();
  // As for a grid: the seeds a curve ran from are in the form and its caption
  // (an empty box ran seeds from 0 and said none). A curve's trunks are
  // seeds, so a promoted trunk's seed is the first.
  if (!controls.seed.value.trim()) {
    controls.seed.value = formTrunk ? String(formTrunk.init_seed ?? '0') : randomSeed();
  }
  const state = stateFromControls();
  let request;
  try {
    request = curveRequestFromState(state, curveTrunks.value);
  } catch (error) {
    showError(error, 'curve');
    setCurveState('error', `No curve: ${withFullStop(inPageTerms(error.message))}${keepPreviousCurve()}`);
    return;
  }
  abortCurve?.abort();
  const controller = new AbortController();
  abortCurve = controller;
  const id = ++curveCounter;
  const run = {request, promoted: Boolean(state.trunk), done: 0, plan: null};
  curvePlotBox.classList.add('stale');
  resetCurveExports();
  showTokensNote(null, curveTokensNote);
  setCurveState('running', 'Planning…', 0);
  if (focusedRun) curveCancel.focus();
  try {
    const curve = await streamCurve(request, {
      token: controls.token.value.trim(),
      signal: controller.signal,
      onEvent: (name, payload) => {
        if (id === curveCounter) onCurveEvent(run, name, payload);
      },
    });
    if (id !== curveCounter) return;
    showCurve(run, curve);
  } catch (error) {
    if (id !== curveCounter) return;
    const previous = keepPreviousCurve();
    if (error.name === 'AbortError') {
      // Cancel hides itself, passing the focus on to Run (setCurveState).
      setCurveState('cancelled', `Cancelled after ${run.done} of ${request.trunks} trunks.${previous}`);
      return;
    }
    showError(error, 'curve');
    setCurveState('error', `No curve: ${withFullStop(inPageTerms(error.message))}${previous}`);
  } finally {
    if (id === curveCounter) abortCurve = null;
  }
}

// The last finished curve stays, dimmed and named as the previous one, with
// its downloads; returns the sentence that says so (empty without one).
function keepPreviousCurve() {
  if (!lastCurve) {
    curvePlotBox.classList.remove('stale');
    showTokensNote(null, curveTokensNote);
    return '';
  }
  curvePlotBox.classList.add('stale');
  curveCaption.textContent = `Previous curve: ${curveCaptionText(lastCurve.run, lastCurve.curve)}`;
  showTokensNote(lastCurve.curve.plan, curveTokensNote);
  renderCurveExports(lastCurve.run, lastCurve.curve);
  return ' The curve shown is the previous one.';
}

// A server's message may end without a full stop; a sentence follows it.
function withFullStop(text) {
  return /[.!?]$/.test(text) ? text : `${text}.`;
}

function onCurveEvent(run, name, payload) {
  if (name === 'plan') {
    run.plan = payload;
    showTokensNote(payload, curveTokensNote);
    setCurveState('running', `Running ${run.request.trunks} trunks of ${payload.model}…`, 0);
  } else if (name === 'progress') {
    const trunks = payload.trunks ?? run.request.trunks;
    run.done = payload.trunks_done ?? 0;
    setCurveState('running', `${run.done} of ${trunks} trunks done · ${formatNumber(payload.seconds, 1)} s · ` +
        `${Number(payload.model_evals ?? 0)} model evaluations in them`, run.done / trunks);
  }
}

function showCurve(run, curve) {
  curvePlotBox.classList.remove('stale');
  if ((curve.rows ?? []).length === 0) {
    curvePlotBox.replaceChildren(element('p', 'empty', 'No rows.'));
  } else {
    // A model without a judge has no heads: the divergence is its curve.
    const heads = (curve.heads ?? []).length ? [headsPlot(curve)] : [];
    curvePlotBox.replaceChildren(...heads, curveDivergencePlot(curve), curveLegend(curve));
  }
  curveCaption.textContent = curveCaptionText(run, curve);
  showTokensNote(curve.plan ?? run.plan, curveTokensNote);
  const trunks = curve.trunks ?? run.request.trunks;
  setCurveState('done', `Done: ${trunks} trunks in ${formatSeconds(curve.seconds)}`, 1);
  lastCurve = {run, curve};
  renderCurveExports(run, curve);
}

// N trunks and their seeds, what each ran, the time taken, what the error
// bars are.
function curveCaptionText(run, curve) {
  const plan = curve.plan ?? run.plan ?? {};
  const trunks = curve.trunks ?? run.request.trunks;
  const seed = run.request.grid.seed;
  const seeds = seed !== undefined ? ` (seeds ${seed} to ${BigInt(seed) + BigInt(trunks - 1)})` : '';
  const switched = !plan.switch_prompt ? '' :
      `, switching to ${switchName(plan)}` + (plan.switch_unseen ?
        ' (which changes nothing the model reads)' :
        plan.branch_noise === 'BRANCH_NOISE_TRUNK' ? ' with the trunk’s noise' : '');
  // A row where every trunk agrees (± 0) has its 95% interval drawn dashed.
  const agreed = (curve.heads ?? []).some((head) =>
    (head.p_differs ?? []).some((p) => (p.standard_error ?? 0) === 0));
  const judged = (curve.heads ?? []).length ?
      `${curve.judged_images ?? 0} images judged. Half steps: where a head’s curve falls to half its ` +
          'row-0 value, with its 68% interval over resamples of the trunks (the band on the axis).' +
          (agreed ? ' Where every trunk agrees (± 0), a dashed bar is the row’s 95% interval.' : '') :
      `${plan.model} has no judge: its curve is the divergence alone.`;
  const promoted = run.promoted ? ' The promoted trunk is not used: a curve’s trunks are seeds.' : '';
  return `${trunks} trunks${seeds} of ${plan.model}, ${promptName(plan.prompt, modelOf(plan))}${switched}: ` +
      `${plural(plan.branch_steps?.length ?? 0, 'row', 'rows')} × ` +
      `${plural(plan.branches ?? 0, 'branch', 'branches')}, ` +
      `${plural(plan.sampler?.steps ?? 0, `${samplerName(plan.sampler?.sampler)} step`,
          `${samplerName(plan.sampler?.sampler)} steps`)}. ` +
      `Ran ${formatSeconds(curve.seconds)}, ` +
      `${Number(curve.model_evals ?? 0)} model evaluations, ${curve.cache_hits ?? 0} cache hits. ${judged} ` +
      `Error bars: ± one standard error over trunks.${promoted}`;
}

function renderCurveExports(run, curve) {
  const plan = curve.plan ?? {};
  const base = downloadBase('dgrid-curve', plan, `${run.request.grid.seed ?? 0}x${curve.trunks ?? 0}`);
  if (curve.png) {
    curveDownloadPng.href = pngSrc(curve.png);
    curveDownloadPng.download = `${base}.png`;
    curveDownloadPng.removeAttribute('aria-disabled');
  }
  if (curve.svg) {
    curveDownloadSvg.href = `data:image/svg+xml;base64,${curve.svg}`;
    curveDownloadSvg.download = `${base}.svg`;
    curveDownloadSvg.removeAttribute('aria-disabled');
  }
  if (curveJsonUrl) URL.revokeObjectURL(curveJsonUrl);
  const record = {request: run.request, curve: {...curve, png: undefined, svg: undefined}};
  curveJsonUrl = URL.createObjectURL(new Blob([JSON.stringify(record, null, 2)], {type: 'application/json'}));
  curveDownloadJson.href = curveJsonUrl;
  curveDownloadJson.download = `${base}.json`;
  curveDownloadJson.removeAttribute('aria-disabled');
}

// ---------- wiring ----------

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  if (!modelsLoaded) {
    // Enter in the token box: the link's own grid runs once the models come
    // (the token's handler runs it), not a form read before them.
    const linked = pendingView;
    if (!(await modelsReady())) return;
    if (linked) {
      if (pendingView === linked) {
        pendingView = null;
        run(linked, 'none');
      }
      return;
    }
  }
  // The seed a grid ran with is in its box and its URL, so that it can be
  // reloaded and gone back to (an empty box ran seed 0 and left no view).
  if (!controls.seed.value.trim() && !formTrunk) controls.seed.value = randomSeed();
  run(stateFromControls(), 'push');
});
// Both read the form, which has no model or prompt before the models come.
// The form they change is what runs, not a link's view waiting for the
// models (their changes fire no input event).
byTestId('dice').addEventListener('click', async () => {
  pendingView = null;
  controls.seed.value = randomSeed();
  setFormTrunk(null);
  if (!(await modelsReady())) return;
  run(stateFromControls(), 'push');
});
byTestId('clear-trunk').addEventListener('click', async () => {
  // The seed's own trunk: a link with a trunk but no seed ran seed 0 and
  // left a URL with neither.
  pendingView = null;
  if (!controls.seed.value.trim() && formTrunk) controls.seed.value = String(formTrunk.init_seed ?? '0');
  setFormTrunk(null);
  if (!(await modelsReady())) return;
  run(stateFromControls(), 'push');
});
controls.seed.addEventListener('input', () => setFormTrunk(null));
// A link's grid waiting for the models (a denoiser down, a token to give) is
// dropped once the form is edited: Run grid then runs the form, not the link
// under edits the screen shows (the token box's own edits keep it).
for (const type of ['input', 'change']) {
  form.addEventListener(type, (event) => {
    if (event.target !== controls.token) pendingView = null;
  });
}
// A promoted trunk belongs to the model it was drawn with; the trunk's noise
// needs a switch prompt, which the new model's controls may not have.
controls.model.addEventListener('change', () => {
  setFormTrunk(null);
  fillPrompts();
  if (!switches()) controls.noise.value = '';
  fillPlaceholders();
});
controls.preset.addEventListener('change', fillPlaceholders);
controls.steps.addEventListener('input', fillPlaceholders);
controls.noise.addEventListener('change', () => {
  // With the trunk's noise a row is one cell: columns typed for new noise
  // would be refused.
  if (controls.noise.value === 'trunk' && !['', '1'].includes(controls.cols.value.trim())) {
    controls.cols.value = '';
  }
  fillPlaceholders();
});
controls.sampler.addEventListener('change', fillPlaceholders);
controls.spacing.addEventListener('change', fillPlaceholders);
// Whether a switch is one the model reads (switchSeen) moves the rows too.
for (const [control, type] of [[controls.prompt, 'change'], [controls.promptText, 'input'],
  [controls.negative, 'input'], [controls.switchNegative, 'input'], [controls.guidance, 'input']]) {
  control.addEventListener(type, fillPlaceholders);
}
// The trunk's noise needs a switch prompt: without one every branch would be
// the trunk (the server refuses it).
for (const [control, type] of [[controls.switch, 'change'], [controls.switchText, 'input']]) {
  control.addEventListener(type, () => {
    if (!switches()) controls.noise.value = '';
    fillPlaceholders();
  });
}
controls.token.addEventListener('change', async () => {
  const token = controls.token.value.trim();
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  if (await loadModels()) {
    if (pendingView) {
      const state = pendingView;
      pendingView = null;
      run(state, 'none');
    }
  }
});
byTestId('error-dismiss').addEventListener('click', () => clearError());
curveRun.addEventListener('click', runCurve);
gridStop.addEventListener('click', () => {
  stoppedRun = runCounter;
  abortRun?.abort();
});
curveTrunks.addEventListener('keydown', (event) => {
  if (event.key === 'Enter') runCurve();
});
// Esc dismisses the error banner.
document.addEventListener('keydown', (event) => {
  if (event.key === 'Escape' && !banner.hidden) clearError();
});
curveCancel.addEventListener('click', () => abortCurve?.abort());

// The view a URL names. A trunk it cannot read is an error, and the rest of
// the link still fills the form: a shared link with a cut path once ran the
// empty form's grid (unconditional, seed 0) without a word.
function readSearch(search) {
  try {
    return {state: stateFromSearch(search), error: null};
  } catch (error) {
    const params = new URLSearchParams(search);
    params.delete('trunk');
    return {state: stateFromSearch(`?${params}`), error};
  }
}

function showView(search) {
  viewSearch = search;
  const {state, error} = readSearch(search);
  fillControls(state, {fresh: !hasView(search)});
  showSeedOfView(state, search);
  if (error) {
    showError(error);
    return;
  }
  if (hasView(search) && history.state?.stopped) {
    // A grid its user stopped: its work would start over unasked.
    resetView();
    setStatus('This grid was stopped before it finished; Run grid runs it again.');
  } else if (hasView(search)) {
    run(state, 'none');
  } else {
    resetView();
  }
}

// A view without a seed runs seed 0 (the server's default), which the form
// then shows: Run grid would otherwise pick a random one.
function showSeedOfView(state, search) {
  if (hasView(search) && !controls.seed.value && !state.trunk) controls.seed.value = '0';
}

// Back to the page as it opens: no grid.
function resetView() {
  pendingView = null;
  abortRun?.abort();
  runCounter++;
  gridStop.hidden = true;
  view = null;
  hovered = null;
  linkNote.hidden = true;
  setGridState('idle');
  gridBox.classList.remove('stale');
  gridBox.replaceChildren(element('p', 'empty', 'Press Run grid to grow one.'));
  trunkFrame.replaceChildren(placeholder('trunk'));
  delete trunkFigure.dataset.path;
  delete trunkFigure.dataset.loaded;
  trunkCaption.textContent = '';
  renderTrajectory(null);
  plotBox.replaceChildren(element('p', 'empty', 'The plot appears when the grid is complete.'));
  resetExports();
  showTokensNote(null);
  setStatus('Pick a prompt and a seed, then run a grid.');
  runButton.textContent = 'Run grid';
}

// Back and Forward change the view's query string. A jump to an anchor on
// the page (the skip link's #grid) fires popstate too, and must neither
// clear the form nor run the grid again.
window.addEventListener('popstate', () => {
  if (location.search !== viewSearch) showView(location.search);
});

async function start() {
  controls.token.value = sessionStorage.getItem(TOKEN_KEY) ?? '';
  const {state, error} = readSearch(location.search);
  if (error) showError(error);
  fillControls(state, {fresh: !hasView(location.search)});
  showSeedOfView(state, location.search);
  if (!controls.seed.value && !state.trunk) controls.seed.value = randomSeed();
  const ready = await loadModels();
  document.body.dataset.ready = 'true';
  if (hasView(location.search) && !error) {
    if (ready) run(state, 'none');
    else pendingView = state;
  }
}

start();
