// The browser explorer (clients/web) in a real browser: Debian's chromium,
// headless, driven by playwright-core, against live stacks on loopback.
//
//   cd tests/web && npm ci && node --test --test-concurrency=1 explorer.test.mjs
//
// Two stacks: "main" (two denoiser replicas, no auth) and "slow" (one
// denoiser with a 20 ms delay before each forward pass, so that cells are
// seen arriving before the grid completes, and an orchestrator that requires
// a bearer token). The text test starts a third, "text": one denoiser that
// serves the class model and a text-to-image bundle (DGRID_TEXT_MODEL, by
// default the fixture <build>/fixtures/textlatent; the test is skipped
// without one). Each test saves screenshots in DGRID_SCREENSHOT_DIR
// (default <repo>/build/web-screenshots).

import assert from 'node:assert/strict';
import {existsSync, mkdirSync, mkdtempSync, rmSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {dirname, join} from 'node:path';
import {after, before, describe, test} from 'node:test';
import {chromium} from 'playwright-core';
import {LiveStack, REPO, modelDir, textModelDir} from './stack.mjs';

const CHROMIUM = process.env.DGRID_CHROMIUM || '/usr/bin/chromium';
const SCREENSHOTS = process.env.DGRID_SCREENSHOT_DIR || join(REPO, 'build', 'web-screenshots');
const TOKEN = 'web-test-token-3f9c';
const DESKTOP = {width: 1440, height: 1000};
const PHONE = {width: 390, height: 844};
// A small grid: 4 rows x 3 branches of a 20-step trajectory.
const GRID = {seed: '7', steps: '20', rows: '0,5,10,15', cols: '3'};
const ROWS = 4;
const COLS = 3;
const TEXT_MODEL = textModelDir();
// The SDXL-shaped fixture beside it (tests/fixtures/make_sdxl_fixture.py).
const XL_MODEL = TEXT_MODEL && existsSync(join(dirname(TEXT_MODEL), 'textxl', 'manifest.json')) ?
    join(dirname(TEXT_MODEL), 'textxl') : null;
// A small decision curve: 4 trunks of a 3-row, 2-branch, 10-step grid.
const CURVE_GRID = {seed: '7', steps: '10', rows: '0,3,6', cols: '2'};
const CURVE_TRUNKS = 4;

let main;
let slow;
let context;
let userDataDir;
let failed = false;

const cell = (row, col) => `[data-testid="cell"][data-row="${row}"][data-col="${col}"]`;
const testId = (id) => `[data-testid="${id}"]`;

async function newPage(viewport = DESKTOP) {
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  page.setDefaultNavigationTimeout(20_000);
  await page.setViewportSize(viewport);
  page.errors = [];
  page.on('pageerror', (error) => page.errors.push(String(error)));
  return page;
}

async function screenshot(page, name, options = {}) {
  await page.screenshot({path: join(SCREENSHOTS, `${name}.png`), fullPage: true, animations: 'disabled', timeout: 15_000,
    ...options});
}

// Runs `body` with a fresh page, saves the screenshot, and checks that the
// page threw no uncaught error.
async function withPage(name, body, viewport = DESKTOP) {
  const page = await newPage(viewport);
  try {
    await body(page);
    assert.deepEqual(page.errors, [], 'uncaught errors in the page');
  } catch (error) {
    failed = true;
    await screenshot(page, `${name}-failed`).catch(() => {});
    throw error;
  } finally {
    await screenshot(page, name).catch(() => {});
    await page.close().catch(() => {});
  }
}

async function openPage(page, url) {
  await page.goto(url, {waitUntil: 'load'});
  await page.waitForSelector('body[data-ready="true"]');
}

async function fillGrid(page, values) {
  const SELECTS = ['model', 'prompt', 'switch', 'preset', 'noise', 'sampler', 'spacing'];
  for (const [field, value] of Object.entries(values)) {
    if (SELECTS.includes(field)) {
      await page.selectOption(testId(field), value);
    } else {
      await page.fill(testId(field), value);
    }
  }
}

async function waitForGrid(page, timeout = 60_000) {
  await page.waitForFunction(() => {
    const grid = document.querySelector('[data-testid="grid"]');
    return grid.dataset.state === 'done' || grid.dataset.state === 'error';
  }, null, {timeout});
  const state = await page.getAttribute(testId('grid'), 'data-state');
  if (state !== 'done') {
    const message = await page.textContent(testId('error-message'));
    assert.fail(`the grid failed: ${message}`);
  }
}

async function runGrid(page, values = GRID) {
  await fillGrid(page, values);
  await page.click(testId('run'));
  await waitForGrid(page);
}

const src = (page, selector) => page.getAttribute(selector, 'src');

// Waits until the curve panel is no longer running; its state.
async function waitForCurve(page, timeout = 90_000) {
  await page.waitForFunction(() => document.querySelector('[data-testid="curve"]').dataset.state !== 'running',
      null, {timeout});
  return page.getAttribute(testId('curve'), 'data-state');
}

// Polls `check` (async, true when done) until it holds or `ms` pass.
async function eventually(check, ms, what) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`never: ${what}`);
    await new Promise((done) => setTimeout(done, 200));
  }
}

before(async () => {
  mkdirSync(SCREENSHOTS, {recursive: true});
  main = new LiveStack({name: 'main', denoisers: 2});
  slow = new LiveStack({name: 'slow', denoisers: 1, stepDelayMs: 50, authToken: TOKEN});
  try {
    await Promise.all([main.start(), slow.start()]);
    userDataDir = mkdtempSync(join(tmpdir(), 'dgrid-chromium-'));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      timeout: 60_000,
      viewport: DESKTOP,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  } catch (error) {
    failed = true;
    throw error;
  }
}, {timeout: 180_000});

after(async () => {
  if (failed) {
    for (const stack of [main, slow]) if (stack) console.error(stack.logs());
  }
  await context?.close().catch(() => {});
  await Promise.all([main?.stop(), slow?.stop()]);
  if (userDataDir) rmSync(userDataDir, {recursive: true, force: true});
}, {timeout: 60_000});

describe('diffusion grid explorer', {concurrency: false}, () => {
  test('1. the page loads with the model\'s prompts', {timeout: 60_000}, () => withPage('01-load', async (page) => {
    const models = await (await fetch(`${main.url}api/v1/models`)).json();
    const prompts = models.models[0].prompts ?? [];
    await openPage(page, main.url);
    assert.equal(await page.title(), 'Diffusion Grid');
    const options = await page.$$eval(`${testId('prompt')} option`, (nodes) => nodes.map((n) => n.value));
    assert.deepEqual(options, ['', ...prompts], 'prompts: unconditional then the model\'s classes');
    assert.equal(await page.inputValue(testId('prompt')), prompts[0] ?? '');
    assert.match(await page.inputValue(testId('seed')), /^\d+$/, 'a random seed to start from');
    assert.equal(await page.isVisible(testId('error-banner')), false);
    assert.equal(await page.getAttribute(testId('grid'), 'data-state'), 'idle');
    await screenshot(page, '01-load-empty');
    // The dice gives a new seed and grows its grid.
    const before = await page.inputValue(testId('seed'));
    await fillGrid(page, {steps: GRID.steps, rows: GRID.rows, cols: GRID.cols});
    await page.click(testId('dice'));
    await waitForGrid(page);
    const seed = await page.inputValue(testId('seed'));
    assert.notEqual(seed, before);
    assert.equal(new URL(page.url()).searchParams.get('seed'), seed);
    // On a laptop's short screen the Run button stays in view (the form is
    // taller than 720 px).
    await page.setViewportSize({width: 1280, height: 720});
    await page.evaluate(() => window.scrollTo(0, 0));
    const run = await page.locator(testId('run')).boundingBox();
    assert.ok(run.y >= 0 && run.y + run.height <= 720, `Run grid at y = ${run.y}`);
  }));

  test('2. a grid streams: cells appear before it completes', {timeout: 90_000}, () => withPage('02-stream', async (page) => {
    // A finished grid's stream is read to its end, not cut (the browser's
    // tools showed every grid as a failed request).
    const failed = [];
    const finished = [];
    page.on('requestfailed', (request) => failed.push(request.url()));
    page.on('requestfinished', (request) => finished.push(request.url()));
    await openPage(page, slow.url);
    // This orchestrator wants a token: the page says so until it has one.
    await page.waitForSelector(`${testId('error-banner')}:not([hidden])`);
    assert.match(await page.textContent(testId('error-code')), /UNAUTHENTICATED/);
    await page.fill(testId('token'), TOKEN);
    await page.press(testId('token'), 'Tab');
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="prompt"] option').length > 1 ||
        document.querySelector('[data-testid="error-banner"]').hidden);
    await page.waitForSelector(testId('error-banner'), {state: 'hidden'});

    await fillGrid(page, {...GRID, seed: '11'});
    // One check of both facts at one instant: some cells are in, the grid is
    // not complete. The wavefront ends every branch within a few steps of
    // each other, so that instant is short: a MutationObserver checks at
    // every DOM change instead of polling per frame, which a busy machine
    // can stretch past it.
    await page.evaluate(() => {
      window.partialGrid = null;
      new MutationObserver(() => {
        const grid = document.querySelector('[data-testid="grid"]');
        if (window.partialGrid || !grid) return;
        const loaded = grid.querySelectorAll('[data-testid="cell"][data-loaded="true"]').length;
        const all = grid.querySelectorAll('[data-testid="cell"]').length;
        if (grid.dataset.state === 'streaming' && loaded > 0 && loaded < all) {
          const busy = document.querySelector('[data-testid="status"]').getAttribute('aria-busy');
          window.partialGrid = {loaded, all, busy};
        }
      }).observe(document.body, {subtree: true, childList: true, attributes: true});
    });
    await page.click(testId('run'));
    const seen = await page.waitForFunction(() => window.partialGrid, null, {timeout: 30_000});
    const {loaded, all, busy} = await seen.jsonValue();
    assert.equal(all, ROWS * COLS);
    assert.ok(loaded < all, `${loaded} of ${all} cells before completion`);
    assert.equal(busy, 'true', 'the status is busy while the grid streams');
    await screenshot(page, '02-stream-midway');

    await waitForGrid(page);
    // The status is busy while the grid streams: a screen reader announces
    // where it ended, not each of its images.
    assert.equal(await page.getAttribute(testId('status'), 'aria-busy'), 'false');
    assert.equal(await page.locator(`${testId('cell')}[data-loaded="true"]`).count(), ROWS * COLS);
    // The grid is one Tab stop; the arrow keys move within it.
    assert.equal(await page.locator(`${testId('cell')}:not([tabindex="-1"])`).count(), 1);
    // The grid's stream, read to its end in the background.
    await eventually(async () => finished.some((url) => url.includes('grid/stream')), 10_000,
        "the grid's stream finished");
    assert.deepEqual(failed.filter((url) => url.includes('grid/stream')), []);
    assert.ok(await src(page, testId('trunk-image')), 'the trunk image is shown');
    const labels = await page.$$eval(testId('row-label'), (nodes) => nodes.map((n) => n.textContent));
    assert.equal(labels.length, ROWS);
    assert.match(labels[1], /step 5.*t = \d+/);
    // The finished grid has its divergence plot (both series) and exports.
    assert.equal(await page.locator(`${testId('divergence-plot')} svg [data-series] circle`).count(), 2 * ROWS);
    assert.match(await page.getAttribute(testId('download-png'), 'href'), /^data:image\/png;base64,/);
    const record = await page.evaluate(async () => {
      const href = document.querySelector('[data-testid="download-json"]').href;
      return (await fetch(href)).json();
    });
    assert.equal(record.request.seed, '11');
    assert.equal(record.grid.rows.length, ROWS);
    assert.ok(record.grid.rows[2].cells[1].path.segments.length >= 2, 'cells carry their paths');
    assert.equal(record.grid.rows[2].cells[1].png, undefined, 'no image bytes in the JSON');

    // One branch per row has no pair: only the distance to the trunk is plotted.
    await runGrid(page, {...GRID, cols: '1'});
    const plotted = await page.$$eval(`${testId('divergence-plot')} svg [data-series]`,
        (groups) => groups.map((g) => g.dataset.series));
    assert.deepEqual(plotted, ['divergence_to_trunk']);
    assert.deepEqual(await page.$$eval(`${testId('divergence-plot')} .legend li`, (items) => items.map((i) => i.textContent)),
        ['mean RMS distance branches to trunk']);
  }));

  test('3. hovering a cell shows its trajectory', {timeout: 60_000}, () => withPage('03-hover', async (page) => {
    await openPage(page, main.url);
    await runGrid(page);
    const target = cell(2, 1);
    await page.hover(target);
    await page.waitForSelector(`${testId('trajectory')}[data-focus="2,1"]`);
    const steps = await page.$$eval(`${testId('traj-step')}`, (items) => items.map((item) => ({
      row: Number(item.dataset.row),
      dimmed: item.classList.contains('dimmed'),
      images: item.querySelectorAll('img').length,
    })));
    assert.equal(steps.length, ROWS);
    for (const step of steps) {
      assert.equal(step.dimmed, step.row > 2, `row ${step.row}: dimmed only after the hovered row`);
      // x_t and x0 previews at each branch step after step 0.
      if (step.row > 0) assert.equal(step.images, 2, `row ${step.row}: x_t and x0 previews`);
    }
    assert.equal(await src(page, testId('trajectory-final-image')), await src(page, `${target} img`));
    assert.match(await page.textContent(testId('trajectory-caption')), /up to step 10/);
    await screenshot(page, '03-hover');

    // Off the grid, the trajectory is the trunk's again.
    await page.mouse.move(5, 5);
    await page.waitForSelector(`${testId('trajectory')}[data-focus="trunk"]`);
    assert.equal(await page.locator(`${testId('traj-step')}.dimmed`).count(), 0);
    assert.equal(await src(page, testId('trajectory-final-image')), await src(page, testId('trunk-image')));

    // Keyboard focus shows it too, and the arrows move between cells.
    await page.focus(cell(1, 0));
    await page.waitForSelector(`${testId('trajectory')}[data-focus="1,0"]`);
    assert.equal(await page.locator(`${testId('traj-step')}.dimmed`).count(), ROWS - 2);
    await page.keyboard.press('ArrowDown');
    await page.waitForSelector(`${testId('trajectory')}[data-focus="2,0"]`);
    assert.equal(await page.evaluate(() => document.activeElement.dataset.row), '2');
    // Home and End go to the row's ends, with Ctrl to the grid's (they did
    // nothing).
    const focused = () => page.evaluate(() => `${document.activeElement.dataset.row},${document.activeElement.dataset.col}`);
    await page.keyboard.press('End');
    assert.equal(await focused(), `2,${COLS - 1}`);
    await page.keyboard.press('Home');
    assert.equal(await focused(), '2,0');
    await page.keyboard.press('Control+End');
    assert.equal(await focused(), `${ROWS - 1},${COLS - 1}`);
    await page.keyboard.press('Control+Home');
    assert.equal(await focused(), '0,0');
  }));

  test('4. promoting a cell makes it the trunk and changes the URL', {timeout: 90_000}, () => withPage('04-promote', async (page) => {
    await openPage(page, main.url);
    await runGrid(page);
    const before = page.url();
    const target = cell(1, 2);
    const image = await src(page, `${target} img`);
    const path = await page.getAttribute(target, 'data-path');
    assert.ok(path && path.includes('_5-'), `a path branching at step 5: ${path}`);
    await page.click(target);
    await page.waitForURL((url) => url.searchParams.get('trunk') === path);
    assert.notEqual(page.url(), before);
    await page.waitForSelector(`${testId('trunk')}[data-loaded="true"][data-path="${path}"]`);
    await waitForGrid(page);
    assert.equal(await src(page, testId('trunk-image')), image, 'the new trunk is the promoted cell');
    assert.equal(await page.isVisible(testId('trunk-chip')), true);
    // Its own cell in the new grid is the trunk again, and marked so (it
    // looked like a branch).
    assert.equal(await page.getAttribute(target, 'data-path'), path);
    assert.equal(await page.getAttribute(target, 'data-trunk'), 'true');
    assert.match(await page.getAttribute(target, 'aria-label'), /: the trunk itself$/);
    assert.equal(await page.getAttribute(cell(1, 1), 'data-trunk'), null);
    // Clicking it runs nothing (it ran the same grid again).
    let streams = 0;
    const countStreams = (request) => { if (request.url().endsWith('/api/v1/grid/stream')) streams++; };
    page.on('request', countStreams);
    const promotedHistory = await page.evaluate(() => history.length);
    await page.click(target);
    await page.waitForTimeout(500);
    page.off('request', countStreams);
    assert.equal(streams, 0, 'no grid ran');
    assert.equal(await page.getAttribute(testId('grid'), 'data-state'), 'done');
    assert.equal(await page.evaluate(() => history.length), promotedHistory);
    // Fewer steps than the promoted path's segments: the message names the
    // promoted trunk, not the wire's field (trunk.segments[1].from_step).
    await fillGrid(page, {steps: '4'});
    await page.click(testId('run'));
    await page.waitForSelector(`${testId('error-banner')}:not([hidden])`);
    assert.match(await page.textContent(testId('error-message')),
        /^Promoted trunk \(its segment 2\) must be below the steps \(4\), got 5/);
    await page.click(testId('error-dismiss'));
    await fillGrid(page, {steps: ''});

    // On a touch screen a first tap shows the branch's trajectory, and only
    // a second tap promotes it.
    const touched = cell(2, 1);
    const touchedPath = await page.getAttribute(touched, 'data-path');
    const tap = async () => {
      await page.dispatchEvent(touched, 'pointerdown', {pointerType: 'touch', bubbles: true});
      await page.dispatchEvent(touched, 'click', {detail: 1, bubbles: true});
    };
    const promotedUrl = page.url();
    await tap();
    await page.waitForSelector(`${testId('trajectory')}[data-focus="2,1"]`);
    assert.equal(page.url(), promotedUrl, 'a first tap promotes nothing');
    await tap();
    await page.waitForURL((url) => url.searchParams.get('trunk') === touchedPath);
    await page.waitForSelector(`${testId('trunk')}[data-loaded="true"][data-path="${touchedPath}"]`);
    await waitForGrid(page);
    await page.goBack();
    await waitForGrid(page);

    // Enter on a focused cell promotes it too.
    const next = cell(3, 0);
    const nextImage = await src(page, `${next} img`);
    const nextPath = await page.getAttribute(next, 'data-path');
    assert.ok(nextPath.startsWith(`${path}_15-`), `branches below the new trunk extend its path: ${nextPath}`);
    await page.focus(next);
    await page.keyboard.press('Enter');
    await page.waitForURL((url) => url.searchParams.get('trunk') === nextPath);
    await page.waitForSelector(`${testId('trunk')}[data-loaded="true"][data-path="${nextPath}"]`);
    await waitForGrid(page);
    assert.equal(await src(page, testId('trunk-image')), nextImage);
    assert.equal(await page.evaluate(() => document.activeElement?.dataset.testid), 'cell',
        'focus stays in the grid');
  }));

  test('5. back and forward restore the URL and the view', {timeout: 90_000}, () => withPage('05-back', async (page) => {
    await openPage(page, main.url);
    // The sampler is part of the view: in the URL, and the plan's summary names it.
    await runGrid(page, {...GRID, seed: '23', sampler: 'euler_ancestral'});
    const start = page.url();
    assert.equal(new URL(start).searchParams.get('sampler'), 'euler_ancestral');
    assert.match(await page.textContent(testId('summary')), /branches, Euler ancestral, 20 steps/);
    // eta and guidance as the plan holds them (0.004 read "eta 0", which
    // the server refuses).
    await runGrid(page, {...GRID, seed: '23', sampler: 'euler_ancestral', eta: '0.996', guidance: '1.255'});
    assert.match(await page.textContent(testId('summary')), /, eta 0\.996, guidance 1\.255, /);
    await page.goBack();
    await waitForGrid(page);
    assert.equal(page.url(), start);
    const trunkImage = await src(page, testId('trunk-image'));
    const trunkPath = await page.getAttribute(testId('trunk'), 'data-path');
    const target = cell(0, 1);
    const promotedImage = await src(page, `${target} img`);
    const promotedPath = await page.getAttribute(target, 'data-path');
    await page.click(target);
    await page.waitForSelector(`${testId('trunk')}[data-loaded="true"][data-path="${promotedPath}"]`);
    await waitForGrid(page);
    const promoted = page.url();

    await page.goBack();
    assert.equal(page.url(), start);
    await page.waitForSelector(`${testId('trunk')}[data-loaded="true"][data-path="${trunkPath}"]`);
    await waitForGrid(page);
    assert.equal(await src(page, testId('trunk-image')), trunkImage);
    assert.equal(await page.inputValue(testId('seed')), '23');
    assert.equal(await page.inputValue(testId('sampler')), 'euler_ancestral');
    assert.equal(await page.isVisible(testId('trunk-chip')), false);
    await screenshot(page, '05-back');

    await page.goForward();
    assert.equal(page.url(), promoted);
    await page.waitForSelector(`${testId('trunk')}[data-loaded="true"][data-path="${promotedPath}"]`);
    await waitForGrid(page);
    assert.equal(await src(page, testId('trunk-image')), promotedImage);

    // The URL alone reproduces the view: a shared link in a new tab.
    const shared = await newPage();
    try {
      await openPage(shared, promoted);
      await shared.waitForSelector(`${testId('trunk')}[data-loaded="true"][data-path="${promotedPath}"]`);
      await waitForGrid(shared);
      assert.equal(await src(shared, testId('trunk-image')), promotedImage);
      assert.equal(await src(shared, `${cell(2, 2)} img`), await src(page, `${cell(2, 2)} img`));
    } finally {
      await shared.close();
    }

    // The skip link jumps to the grid: no new run, the form as it was (its
    // popstate once reloaded the view from the URL).
    let started = 0;  // grid requests as they start (see test 6)
    const count = (request) => { if (request.url().includes('/api/v1/grid')) started++; };
    page.on('request', count);
    await page.fill(testId('seed'), '24');
    await page.focus('.skip');
    await page.keyboard.press('Enter');
    await page.waitForTimeout(500);
    page.off('request', count);
    assert.equal(started, 0, 'the skip link starts no grid');
    assert.equal(await page.inputValue(testId('seed')), '24', 'the skip link keeps the form');
    assert.equal(new URL(page.url()).search, new URL(promoted).search);
  }));

  test('6. errors are shown in the page', {timeout: 60_000}, () => withPage('06-error', async (page) => {
    // An invalid value: the server's message, in the banner.
    await openPage(page, main.url);
    await fillGrid(page, {...GRID, steps: '0'});
    await page.click(testId('run'));
    await page.waitForSelector(`${testId('error-banner')}:not([hidden])`);
    assert.equal(await page.textContent(testId('error-code')), 'INVALID_ARGUMENT');
    assert.match(await page.textContent(testId('error-message')), /^Steps must be in \[1, \d+\], got 0/);
    assert.equal(await page.getAttribute(testId('grid'), 'data-state'), 'error');
    await screenshot(page, '06-error-steps');
    await page.click(testId('error-dismiss'));
    await page.waitForSelector(testId('error-banner'), {state: 'hidden'});

    // Text in a number's box is named, not run as the default (a number
    // input once read "abc" as empty).
    await fillGrid(page, {...GRID, steps: 'abc'});
    await page.click(testId('run'));
    await page.waitForSelector(`${testId('error-banner')}:not([hidden])`);
    assert.equal(await page.textContent(testId('error-message')), 'Steps: not a number: "abc"');
    // The status says it too: on a phone the banner is out of sight.
    assert.equal(await page.textContent(testId('status-text')), 'Not run: Steps: not a number: "abc"');
    await page.click(testId('error-dismiss'));
    // The Rows placeholder gives the rows the preset takes at the typed steps.
    await fillGrid(page, {steps: '10', rows: ''});
    assert.equal(await page.getAttribute(testId('rows'), 'placeholder'), 'preset: 0,1,2,4,6,8 of 10');
    // turbo at 3 steps: its rows stop short of the last, where Euler
    // ancestral adds no noise, unless a switch the model reads makes the
    // branches differ. A switch to the prompt itself is none, as the server
    // plans it (the placeholder said 0,1,2 and the grid came with 0,1).
    const rowsPlaceholder = () => page.getAttribute(testId('rows'), 'placeholder');
    const classes = await page.$$eval(`${testId('prompt')} option`,
        (options) => options.map((o) => o.value).filter(Boolean));
    await fillGrid(page, {prompt: classes[0], preset: 'turbo', steps: '3'});
    assert.equal(await rowsPlaceholder(), 'preset: 0,1 of 3');
    await fillGrid(page, {switch: classes[0]});
    assert.equal(await rowsPlaceholder(), 'preset: 0,1 of 3');
    await fillGrid(page, {switch: classes[1]});
    assert.equal(await rowsPlaceholder(), 'preset: 0,1,2 of 3');
    await fillGrid(page, {switch: '', preset: 'default', steps: ''});

    // A link carrying a field its model's form hides (a class model's
    // negative prompt) runs without it, as the form would send it (it was
    // refused, naming a field the page does not show).
    const hidden = await newPage();
    try {
      await openPage(hidden, `${main.url}?seed=11&steps=6&rows=0,3&cols=2&negative=blurry`);
      await waitForGrid(hidden);
      assert.equal(await hidden.isVisible(testId('error-banner')), false);
      assert.equal(await hidden.getAttribute(testId('grid'), 'data-state'), 'done');
    } finally {
      await hidden.close();
    }

    // An empty seed box runs a seed of its own, shown in the box and the URL
    // (it ran seed 0, and the page could not be reloaded or gone back to).
    await runGrid(page, {...GRID, seed: ''});
    const seed = await page.inputValue(testId('seed'));
    assert.match(seed, /^\d+$/);
    assert.equal(new URL(page.url()).searchParams.get('seed'), seed);

    // A shared link whose trunk was cut: the error, the rest of the link in
    // the form, and no grid (it once ran the empty form's, seed 0).
    const cut = await newPage();
    // Requests as they start: a streamed grid's fetch is listed among the
    // page's resources only once its whole answer is in.
    let cutRuns = 0;
    cut.on('request', (request) => { if (request.url().includes('/api/v1/grid')) cutRuns++; });
    try {
      await openPage(cut, `${main.url}?seed=11&steps=12&rows=0,4&cols=2&trunk=11_0-1_4-`);
      await cut.waitForSelector(`${testId('error-banner')}:not([hidden])`);
      assert.match(await cut.textContent(testId('error-message')), /trunk: bad segment "4-"/);
      assert.equal(await cut.inputValue(testId('seed')), '11');
      assert.equal(await cut.inputValue(testId('steps')), '12');
      await cut.waitForTimeout(500);
      assert.equal(cutRuns, 0, 'no grid runs');
    } finally {
      await cut.close();
    }

    // A link's preset the list does not offer stays in the form, refused
    // by name; the list showed "default", and Run grid ran that.
    const unknown = await newPage();
    try {
      await openPage(unknown, `${main.url}?seed=11&steps=12&rows=0,4&cols=2&preset=bogus`);
      await unknown.waitForSelector(`${testId('error-banner')}:not([hidden])`);
      assert.match(await unknown.textContent(testId('error-message')), /preset/);
      assert.equal(await unknown.inputValue(testId('preset')), 'bogus');
      await unknown.click(testId('error-dismiss'));
      await unknown.click(testId('run'));
      await unknown.waitForSelector(`${testId('error-banner')}:not([hidden])`);
      assert.match(await unknown.textContent(testId('error-message')), /preset/);
      // A preset the list offers runs; back shows the unknown one again, and
      // forward leaves it behind.
      await unknown.click(testId('error-dismiss'));
      await runGrid(unknown, {preset: 'classic'});
      await unknown.goBack();
      await unknown.waitForFunction(
          () => document.querySelector('[data-testid="preset"]').value === 'bogus');
      await unknown.goForward();
      await unknown.waitForFunction(
          () => document.querySelector('[data-testid="preset"]').value === 'classic');
      assert.equal(await unknown.locator(`${testId('preset')} option[value="bogus"]`).count(), 0);
    } finally {
      await unknown.close();
    }

    // A wrong bearer token.
    const denied = await newPage();
    try {
      await openPage(denied, slow.url);
      await denied.fill(testId('token'), 'not-the-token');
      await fillGrid(denied, GRID);
      await denied.click(testId('run'));
      await denied.waitForFunction(() => /invalid bearer token/.test(
          document.querySelector('[data-testid="error-message"]').textContent));
      assert.equal(await denied.isVisible(testId('error-banner')), true);
      assert.equal(await denied.textContent(testId('error-code')), 'UNAUTHENTICATED');
      await screenshot(denied, '06-error-token');
      assert.deepEqual(denied.errors, []);
    } finally {
      await denied.close();
    }
  }));

  test('7. readable at phone width', {timeout: 60_000}, () => withPage('07-phone', async (page) => {
    await openPage(page, main.url);
    await runGrid(page);
    await page.hover(cell(1, 1));
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `no sideways scrolling (${overflow}px too wide)`);
    const box = await page.locator(cell(ROWS - 1, COLS - 1)).boundingBox();
    assert.ok(box.x + box.width <= PHONE.width, 'the last column fits');
    assert.ok(box.width >= 40, `cells stay tappable (${box.width}px)`);
    await page.evaluate(() => document.querySelector('.trunk-panel').scrollIntoView({block: 'start'}));
    await screenshot(page, '07-phone-grid', {fullPage: false});

    // A grid wider than the phone scrolls, and its row labels stay reachable
    // (centred, they once sat left of the panel, past its scroll).
    await runGrid(page, {...GRID, rows: '0,10', cols: '16'});
    const label = await page.locator(testId('row-label')).first().boundingBox();
    assert.ok(label.x >= 0, `the row labels can be seen (x = ${label.x})`);
    assert.equal(await page.textContent('.col-head >> nth=15'), '16', 'many columns are numbered');

    // The headings follow the window: numbered on the phone, named once it
    // widens (they were fixed when the grid was built, and ran together
    // when a desktop window narrowed).
    await runGrid(page, {...GRID, rows: '0,10', cols: '6'});
    assert.equal(await page.textContent('.col-head >> nth=0'), '1');
    await page.setViewportSize({width: 1400, height: 900});
    await page.waitForFunction(() => document.querySelector('.col-head').textContent === 'branch 1',
        null, {timeout: 5_000});
  }, PHONE));

  test('8. a text model: a text box with its examples and a negative prompt; a class model: the list',
      {timeout: 180_000, skip: TEXT_MODEL ? false : 'no text-to-image bundle (DGRID_TEXT_MODEL)'}, async () => {
    // Its own stack, so that a text bundle the denoiser cannot load fails
    // this test alone.
    const text = new LiveStack({name: 'text', denoisers: 1, models: [modelDir(), TEXT_MODEL]});
    try {
      await text.start();
      const listed = (await (await fetch(`${text.url}api/v1/models`)).json()).models;
      const textModel = listed.find((m) => m.conditioning === 'text');
      const classModel = listed.find((m) => m.conditioning !== 'text');
      assert.ok(textModel && classModel, `a text and a class model: ${JSON.stringify(listed.map((m) => m.name))}`);
      const examples = textModel.example_prompts ?? [];
      assert.ok(examples.length > 0, 'the text model has example prompts');

      await withPage('08-text', async (page) => {
        await openPage(page, text.url);
        // The trunk's noise needs a switch prompt: the class model's goes
        // with the model, and so does the noise (it stayed, and Run grid
        // was refused).
        await fillGrid(page, {model: classModel.name});
        await fillGrid(page, {switch: classModel.prompts[1], noise: 'trunk'});
        await fillGrid(page, {model: textModel.name});
        assert.equal(await page.inputValue(testId('noise')), '');
        await page.waitForSelector(testId('prompt-text'), {state: 'visible'});
        assert.equal(await page.isVisible(testId('prompt')), false, 'no class list for a text model');
        assert.equal(await page.isVisible(testId('negative-prompt')), true);
        const suggested = await page.$$eval(`${testId('prompt-examples')} option`, (nodes) => nodes.map((n) => n.value));
        assert.deepEqual(suggested, examples, 'the box suggests the model\'s examples');
        assert.equal(await page.getAttribute(testId('prompt-text'), 'list'), 'prompt-examples');
        assert.equal(await page.inputValue(testId('prompt-text')), examples[0], 'it starts on the first example');
        await screenshot(page, '08-text-controls');

        // A typed prompt and a negative prompt run a grid and land in the URL.
        await page.fill(testId('prompt-text'), '');
        await page.locator(testId('prompt-text')).pressSequentially('a photo of a cat');
        await page.fill(testId('negative-prompt'), 'blurry');
        await runGrid(page, {...GRID, seed: '31'});
        const url = new URL(page.url());
        assert.equal(url.searchParams.get('model'), textModel.name);
        assert.equal(url.searchParams.get('prompt'), 'a photo of a cat');
        assert.equal(url.searchParams.get('negative'), 'blurry');
        assert.equal(await page.locator(`${testId('cell')}[data-loaded="true"]`).count(), ROWS * COLS);
        assert.equal(await page.isVisible(testId('tokens-note')), false, 'a short prompt keeps every token');
        const record = await page.evaluate(async () => {
          const href = document.querySelector('[data-testid="download-json"]').href;
          return (await fetch(href)).json();
        });
        assert.equal(record.request.prompt, 'a photo of a cat');
        assert.equal(record.request.negative_prompt, 'blurry');
        assert.equal(record.grid.plan.negative_prompt, 'blurry');
        const trunkImage = await src(page, testId('trunk-image'));

        // This model has no judge: its decision curve is the divergence alone.
        assert.match(await page.textContent(testId('curve-judge')), /has no judge/);
        await page.fill(testId('curve-trunks'), '2');
        await page.click(testId('curve-run'));
        assert.equal(await waitForCurve(page), 'done', await page.textContent(testId('error-message')));
        assert.equal(await page.locator(`${testId('curve-plot')} [data-series="head"]`).count(), 0, 'no head series');
        assert.equal(await page.locator(`${testId('curve-plot')} [data-testid="half-step"]`).count(), 0);
        assert.equal(await page.locator(`${testId('curve-plot')} [data-series="divergence"] [data-testid="error-bar"]`)
            .count(), ROWS);
        assert.match(await page.textContent(testId('curve-caption')), /^2 trunks \(seeds 31 to 32\) of .*has no judge/);
        await screenshot(page, '08-text-curve');

        // The link alone restores the text, the negative prompt and the grid.
        const shared = await newPage();
        try {
          await openPage(shared, page.url());
          await waitForGrid(shared);
          assert.equal(await shared.inputValue(testId('prompt-text')), 'a photo of a cat');
          assert.equal(await shared.inputValue(testId('negative-prompt')), 'blurry');
          assert.equal(await src(shared, testId('trunk-image')), trunkImage);
          assert.deepEqual(shared.errors, []);
        } finally {
          await shared.close();
        }

        // A switch to free text with its own negative prompt: in the URL,
        // the row labels and a cell's hover text (the labels named the
        // prompt alone, so a switch of the negative prompt alone read as a
        // switch to the same prompt).
        await page.fill(testId('switch-text'), 'a photo of a dog');
        await page.fill(testId('switch-negative'), 'grainy');
        await runGrid(page, {...GRID, seed: '34', rows: '0,10', cols: '2'});
        const switchUrl = new URL(page.url());
        assert.equal(switchUrl.searchParams.get('switch'), 'a photo of a dog');
        assert.equal(switchUrl.searchParams.get('switchNegative'), 'grainy');
        assert.deepEqual(await page.$$eval(`${testId('row-label')} .row-step`, (nodes) => nodes.map((n) => n.textContent)),
            ['→ “a photo of a dog”, negative “grainy” after step 0',
              '→ “a photo of a dog”, negative “grainy” after step 10']);
        const switchTitle = await page.getAttribute(cell(1, 1), 'title');
        assert.ok(switchTitle.includes('prompt → “a photo of a dog”, negative “grainy” from step 10'), switchTitle);
        await screenshot(page, '08-text-switch');
        // Promoted, the cell keeps its segment's prompts (through the URL).
        const switchedPath = await page.getAttribute(cell(1, 1), 'data-path');
        assert.match(switchedPath, /_10-\d+~a photo of a dog~grainy$/);
        const switchedImage = await src(page, `${cell(1, 1)} img`);
        await page.click(cell(1, 1));
        await page.waitForURL((next) => next.searchParams.get('trunk') === switchedPath);
        await page.waitForSelector(`${testId('trunk')}[data-loaded="true"][data-path="${switchedPath}"]`);
        await waitForGrid(page);
        assert.equal(await src(page, testId('trunk-image')), switchedImage);
        // The trunk has switched at step 10: that row does not again.
        assert.deepEqual(await page.$$eval(`${testId('row-label')} .row-step`, (nodes) => nodes.map((n) => n.textContent)),
            ['→ “a photo of a dog”, negative “grainy” after step 0', 'step 10']);
        await page.fill(testId('switch-text'), '');
        // A switch negative prompt alone switches to the same prompt (it was
        // refused: "give switch_prompt too").
        await page.fill(testId('switch-negative'), 'grainy');
        await runGrid(page, {...GRID, seed: '35', rows: '0,10', cols: '2'});
        const prompt = await page.inputValue(testId('prompt-text'));
        assert.deepEqual(await page.$$eval(`${testId('row-label')} .row-step`, (nodes) => nodes.map((n) => n.textContent)),
            [`→ “${prompt}”, negative “grainy” after step 0`, `→ “${prompt}”, negative “grainy” after step 10`]);
        await page.fill(testId('switch-negative'), '');

        // A prompt longer than the model's context: the page says what was cut.
        await page.fill(testId('prompt-text'), Array(200).fill('cat').join(' '));
        await runGrid(page, {...GRID, seed: '32', rows: '0,10', cols: '2'});
        await page.waitForSelector(testId('tokens-note'), {state: 'visible'});
        assert.match(await page.textContent(testId('tokens-note')), /dropped its last \d+ tokens of the prompt/);
        await screenshot(page, '08-text-dropped');
        assert.equal(await page.isVisible(testId('link-note')), false);
        // A link past the 8 KiB of a request line says so: it could not be
        // reloaded (414).
        await page.fill(testId('prompt-text'), 'é'.repeat(1400));
        await runGrid(page, {...GRID, seed: '33', rows: '0,10', cols: '2'});
        await page.waitForSelector(testId('link-note'), {state: 'visible'});
        assert.match(await page.textContent(testId('link-note')), /link is 8\.\d KiB, past the 8 KiB/);
        await page.fill(testId('prompt-text'), Array(200).fill('cat').join(' '));
        // A curve of it says so too. Its seed box left empty, it runs from a
        // seed it fills in, as a grid does, and its caption names them.
        await page.fill(testId('seed'), '');
        await page.fill(testId('curve-trunks'), '2');
        await page.click(testId('curve-run'));
        assert.equal(await waitForCurve(page), 'done', await page.textContent(testId('error-message')));
        assert.match(await page.textContent(testId('curve-tokens-note')), /dropped its last \d+ tokens of the prompt/);
        const curveSeed = await page.inputValue(testId('seed'));
        assert.match(curveSeed, /^\d+$/);
        assert.match(await page.textContent(testId('curve-caption')),
            new RegExp(`^2 trunks \\(seeds ${curveSeed} to ${BigInt(curveSeed) + 1n}\\)`));
        // So is a switch prompt's.
        await page.fill(testId('prompt-text'), 'a photo of a cat');
        await page.fill(testId('switch-text'), Array(100).fill('cat').join(' '));
        await runGrid(page, {...GRID, seed: '34', rows: '0,10', cols: '2'});
        await page.waitForSelector(testId('tokens-note'), {state: 'visible'});
        const switchNote = await page.textContent(testId('tokens-note'));
        assert.equal(await page.isVisible(testId('link-note')), false, 'a short link again');
        assert.match(switchNote, /dropped its last 25 tokens of the switch prompt\./);
        assert.doesNotMatch(switchNote, /of the prompt/);
        await page.fill(testId('switch-text'), '');

        // Back to the class model: the list again, and no negative prompt.
        await fillGrid(page, {model: classModel.name});
        await page.waitForSelector(testId('prompt'), {state: 'visible'});
        assert.equal(await page.isVisible(testId('prompt-text')), false);
        assert.equal(await page.isVisible(testId('negative-prompt')), false);
        assert.equal(await page.isVisible(testId('switch-negative')), false);
        assert.equal(await page.isVisible(testId('switch')), true, 'the switch lists the classes');
        // The judge line speaks of the next curve, the form's model, and
        // says so beside the text model's curve still on screen.
        assert.match(await page.textContent(testId('curve-judge')), new RegExp(`^A curve of ${classModel.name} `));
        const options = await page.$$eval(`${testId('prompt')} option`, (nodes) => nodes.map((n) => n.value));
        assert.deepEqual(options, ['', ...(classModel.prompts ?? [])]);
        await runGrid(page, {...GRID, seed: '33'});
        const classUrl = new URL(page.url());
        assert.equal(classUrl.searchParams.get('model'), classModel.name);
        assert.equal(classUrl.searchParams.has('negative'), false, 'a class model sends no negative prompt');
        assert.equal(await page.isVisible(testId('tokens-note')), false);
      });
    } catch (error) {
      failed = true;
      console.error(text.logs());
      throw error;
    } finally {
      await text.stop();
    }
  });
  test('9. a prompt switch: the rows say it, a cell\'s hover says where, promotion keeps it', {timeout: 120_000},
      () => withPage('09-switch', async (page) => {
    const prompts = (await (await fetch(`${main.url}api/v1/models`)).json()).models[0].prompts ?? [];
    assert.ok(prompts.length >= 2, `a class model with two classes: ${prompts}`);
    const [from, to] = prompts;
    await openPage(page, main.url);
    // Choosing the trunk's noise clears columns typed for new noise (the
    // server refused them: "ask for 1").
    await fillGrid(page, {cols: '4', switch: to});
    await page.selectOption(testId('noise'), 'trunk');
    assert.equal(await page.inputValue(testId('cols')), '');
    // With the trunk's noise a row is one column: the trunk, switched to
    // `to` after the row's step.
    await runGrid(page, {...GRID, seed: '41', cols: '', prompt: from, switch: to, noise: 'trunk'});
    const url = new URL(page.url());
    assert.equal(url.searchParams.get('switch'), to);
    assert.equal(url.searchParams.get('noise'), 'trunk');
    const labels = await page.$$eval(`${testId('row-label')} .row-step`, (nodes) => nodes.map((n) => n.textContent));
    assert.deepEqual(labels, GRID.rows.split(',').map((step) => `→ ${to} after step ${step}`));
    assert.equal(await page.locator(`${testId('cell')}[data-loaded="true"]`).count(), ROWS, 'one column');
    assert.notEqual(await src(page, `${cell(0, 0)} img`), await src(page, testId('trunk-image')),
        'switched from step 0, the picture changes');

    // Hovering a cell says where its prompt changed.
    const target = cell(2, 0);
    const changed = `prompt → ${to} from step 10`;
    await page.hover(target);
    await page.waitForSelector(`${testId('trajectory')}[data-focus="2,0"]`);
    const title = await page.getAttribute(target, 'title');
    assert.ok(title.includes(changed), `the cell's title: ${title}`);
    const caption = await page.textContent(testId('trajectory-caption'));
    assert.ok(caption.includes(`Its ${changed}.`), `the trajectory caption: ${caption}`);
    const path = await page.getAttribute(target, 'data-path');
    assert.match(path, new RegExp(`_10-\\d+#${prompts.indexOf(to)}$`), `the switch is in the cell's path: ${path}`);
    await screenshot(page, '09-switch-hover');

    // Promoting it sends the path with its segment's prompt: the trunk is
    // the switched cell, and the switch fields stay.
    const image = await src(page, `${target} img`);
    await page.click(target);
    await page.waitForURL((next) => next.searchParams.get('trunk') === path);
    await page.waitForSelector(`${testId('trunk')}[data-loaded="true"][data-path="${path}"]`);
    await waitForGrid(page);
    assert.equal(await src(page, testId('trunk-image')), image, 'the promoted switched cell reproduces');
    assert.ok((await page.textContent(testId('trunk-caption'))).includes(changed));
    // Rows at or after the trunk's own switch do not switch again (they
    // were labelled as switching, and the summary said every row did).
    assert.deepEqual(await page.$$eval(`${testId('row-label')} .row-step`, (nodes) => nodes.map((n) => n.textContent)),
        [`→ ${to} after step 0`, `→ ${to} after step 5`, 'step 10', 'step 15']);
    assert.match(await page.textContent(testId('summary')), /but not after step 10, 15: the trunk has switched already/);
    // A trunk that switches to `to` and later back: rows between the two
    // switch (a row's switch holds to the end), and say so.
    const twice = `41_0-1_5-2#${prompts.indexOf(to)}_12-3#${prompts.indexOf(from)}`;
    const back = await newPage();
    try {
      await openPage(back, `${main.url}?seed=41&steps=20&rows=0,5,10,15&prompt=${encodeURIComponent(from)}` +
          `&switch=${encodeURIComponent(to)}&noise=trunk&trunk=${encodeURIComponent(twice)}`);
      await waitForGrid(back);
      assert.deepEqual(await back.$$eval(`${testId('row-label')} .row-step`, (nodes) => nodes.map((n) => n.textContent)),
          GRID.rows.split(',').map((step) => `→ ${to} after step ${step}`));
      // A switch back to the grid's prompt, on a trunk that switched away
      // from it, switches every row (the server planned it as no switch
      // when it read as the grid's prompt: every row said "step k").
      const away = `41_0-1_5-2#${prompts.indexOf(to)}`;
      await openPage(back, `${main.url}?seed=41&steps=20&rows=0,5,10,15&prompt=${encodeURIComponent(from)}` +
          `&switch=${encodeURIComponent(from)}&noise=trunk&trunk=${encodeURIComponent(away)}`);
      await waitForGrid(back);
      assert.deepEqual(await back.$$eval(`${testId('row-label')} .row-step`, (nodes) => nodes.map((n) => n.textContent)),
          GRID.rows.split(',').map((step) => `→ ${from} after step ${step}`));
    } finally {
      await back.close();
    }
    assert.equal(await page.inputValue(testId('switch')), to);
    assert.equal(await page.inputValue(testId('noise')), 'trunk');
    assert.equal(new URL(page.url()).searchParams.get('switch'), to);
    const record = await page.evaluate(async () => {
      const href = document.querySelector('[data-testid="download-json"]').href;
      return (await fetch(href)).json();
    });
    assert.equal(record.request.switch_prompt, to);
    assert.deepEqual(record.request.trunk.segments.at(-1).conditioning, {class_index: prompts.indexOf(to)});

    // The link alone brings back the switched trunk and the switch.
    const shared = await newPage();
    try {
      await openPage(shared, page.url());
      await shared.waitForSelector(`${testId('trunk')}[data-loaded="true"][data-path="${path}"]`);
      await waitForGrid(shared);
      assert.equal(await src(shared, testId('trunk-image')), image);
      assert.equal(await shared.inputValue(testId('switch')), to);
      assert.deepEqual(shared.errors, []);
    } finally {
      await shared.close();
    }

    // A switch to the prompt itself switches nothing: the rows say no
    // switch, and the summary says why.
    await openPage(page, main.url);
    await runGrid(page, {...GRID, seed: '42', prompt: from, switch: from, noise: 'new'});
    const unseen = await page.$$eval(`${testId('row-label')} .row-step`, (nodes) => nodes.map((n) => n.textContent));
    assert.deepEqual(unseen, GRID.rows.split(',').map((step) => `step ${step}`));
    assert.match(await page.textContent(testId('summary')), /The switch to .* changes nothing the model reads/);
  }));

  test('10. a decision curve: one series per judge head with error bars, its half step, the divergence',
      {timeout: 120_000}, () => withPage('10-curve', async (page) => {
    const model = (await (await fetch(`${main.url}api/v1/models`)).json()).models[0];
    const heads = (model.judge?.heads ?? []).map((head) => head.name);
    await openPage(page, main.url);
    assert.equal(await page.inputValue(testId('curve-trunks')), '20', 'twenty trunks to start with');
    assert.match(await page.textContent(testId('curve-judge')),
        heads.length ? new RegExp(`judges each image’s ${heads[0]} \\(\\d+ labels\\)`) : /has no judge/);
    await fillGrid(page, {...CURVE_GRID, prompt: ''});
    await page.fill(testId('curve-trunks'), String(CURVE_TRUNKS));
    await page.click(testId('curve-run'));
    assert.equal(await page.isVisible(testId('curve-cancel')), true, 'a running curve can be cancelled');
    assert.equal(await waitForCurve(page), 'done', await page.textContent(testId('error-message')));
    assert.equal(await page.isVisible(testId('curve-cancel')), false);
    assert.match(await page.textContent(testId('curve-status')), new RegExp(`Done: ${CURVE_TRUNKS} trunks in [\\d.]+ s`));
    await screenshot(page, '10-curve');

    // What the page drew, against the curve it received (the JSON export).
    const record = await page.evaluate(async () => {
      const href = document.querySelector('[data-testid="curve-download-json"]').href;
      return (await fetch(href)).json();
    });
    assert.equal(record.request.trunks, CURVE_TRUNKS);
    assert.equal(record.request.grid.seed, '7');
    assert.deepEqual(record.request.grid.branch_steps, [0, 3, 6]);
    const curve = record.curve;
    const rows = CURVE_GRID.rows.split(',').length;
    assert.equal(curve.rows.length, rows);
    assert.deepEqual(curve.heads.map((head) => head.head), heads, 'one curve per judge head');
    const plot = testId('curve-plot');
    const series = await page.$$eval(`${plot} [data-series="head"]`, (groups) => groups.map((group) => ({
      head: group.dataset.head,
      dots: group.querySelectorAll('circle').length,
      bars: group.querySelectorAll('[data-testid="error-bar"]').length,
      half: group.querySelector('[data-testid="half-step"]')?.dataset.step ?? null,
    })));
    assert.deepEqual(series.map((s) => s.head), heads, 'one series per head');
    // The x axis is labelled at each row's step and at its end, the last
    // step (its last quarter was blank, unlabelled, past row 6).
    const xLabels = await page.$eval(`${plot} .axes`, (axes) => [...axes.querySelectorAll('text')]
        .filter((t) => t.getAttribute('text-anchor') === 'middle' && !t.classList.contains('axis-title'))
        .map((t) => t.textContent));
    assert.deepEqual(xLabels, ['0', '3', '6', CURVE_GRID.steps]);
    for (const [h, drawn] of series.entries()) {
      assert.equal(drawn.dots, rows, `${drawn.head}: a point per row`);
      assert.equal(drawn.bars, rows, `${drawn.head}: an error bar per row`);
      const head = curve.heads[h];
      if (head.half_found) {
        // To 2 decimals, ties to even as printf (plot.js's fixed).
        assert.ok(Math.abs(Number(drawn.half) - (head.half_step ?? 0)) <= 0.005 + 1e-12,
            `${drawn.head}: the half step is marked (${drawn.half} for ${head.half_step})`);
      } else {
        assert.equal(drawn.half, null, `${drawn.head}: no half step, no marker`);
      }
    }
    const legend = await page.$$eval(`${plot} [data-testid="curve-legend-head"]`, (items) => items.map((i) => i.textContent));
    assert.equal(legend.length, heads.length);
    for (const [h, text] of legend.entries()) {
      const head = curve.heads[h];
      assert.match(text, !head.half_found ? /not half its row-0 value by the last row, step \d+/ :
          head.half_step_hi_after_last_row ? /half its row-0 value at step [\d.]+, 68% from [\d.]+ to past step \d+/ :
          /half its row-0 value at step [\d.]+ ± [\d.]+/);
    }
    // The mean RMS divergence per row, both series, with error bars.
    for (const key of ['divergence', 'divergence_to_trunk']) {
      assert.equal(await page.locator(`${plot} [data-series="${key}"] circle`).count(), rows);
      assert.equal(await page.locator(`${plot} [data-series="${key}"] [data-testid="error-bar"]`).count(), rows);
    }
    const caption = await page.textContent(testId('curve-caption'));
    assert.match(caption, new RegExp(`^${CURVE_TRUNKS} trunks \\(seeds 7 to ${7 + CURVE_TRUNKS - 1}\\)`));
    assert.match(caption, / steps\. Ran (under 0\.1|\d+(\.\d)?) s, \d+ model evaluations/);
    assert.match(caption, /± one standard error over trunks/);
    assert.match(await page.getAttribute(testId('curve-download-png'), 'href'), /^data:image\/png;base64,/);
    // The same figure as SVG: a document the browser parses, at the PNG's size.
    const svg = await page.evaluate(async () => {
      const href = document.querySelector('[data-testid="curve-download-svg"]').href;
      const text = await (await fetch(href)).text();
      const root = new DOMParser().parseFromString(text, 'image/svg+xml').documentElement;
      return {tag: root.localName, width: root.getAttribute('width'),
              error: root.getElementsByTagName('parsererror').length};
    });
    assert.deepEqual(svg, {tag: 'svg', width: '820px', error: 0});
    assert.equal(record.curve.svg, undefined, 'the JSON export leaves the plots out');

    // A mistake in the form: the curve on screen is named, and dimmed, as
    // the previous one, as after a refusal by the server.
    await page.fill(testId('curve-trunks'), 'abc');
    await page.click(testId('curve-run'));
    await page.waitForSelector(`${testId('curve')}[data-state="error"]`);
    assert.equal(await page.textContent(testId('curve-status')),
        'No curve: Trunks: not a number: "abc". The curve shown is the previous one.');
    assert.match(await page.textContent(testId('curve-caption')), /^Previous curve: /);
    assert.equal(await page.$eval(plot, (box) => box.classList.contains('stale')), true);
    assert.match(await page.getAttribute(testId('curve-download-json'), 'href'), /^blob:/, 'its downloads stay');
  }));

  test('11. a curve shows its progress and cancelling it stops it on the server; bad input is refused',
      {timeout: 150_000}, () => withPage('11-curve-cancel', async (page) => {
    await openPage(page, slow.url);
    await page.fill(testId('token'), TOKEN);
    await page.press(testId('token'), 'Tab');
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="prompt"] option').length > 1);

    // Refused before it starts: the server's message, in the banner.
    await fillGrid(page, {...CURVE_GRID, rows: '0,5', seed: '51'});
    await page.fill(testId('curve-trunks'), '1');
    await page.click(testId('curve-run'));
    assert.equal(await waitForCurve(page), 'error');
    // Cancel, which had the focus while the curve ran, hides: the focus goes
    // back to Run, not to the page's body.
    await page.waitForFunction(() => document.activeElement?.dataset.testid === 'curve-run');
    assert.equal(await page.textContent(testId('error-code')), 'INVALID_ARGUMENT');
    // In the page's terms: the box is Trunks.
    assert.match(await page.textContent(testId('error-message')), /^Trunks must be in \[2, \d+\]/);
    assert.match(await page.textContent(testId('curve-status')), /^No curve: Trunks must be in \[2, \d+\]/);
    // Enter in the Trunks box runs the curve, not the grid of the form.
    await page.fill(testId('curve-trunks'), '2.5');
    await page.press(testId('curve-trunks'), 'Enter');
    await page.waitForFunction(() => /Trunks: not a whole number/.test(
        document.querySelector('[data-testid="error-message"]').textContent));
    // Digits only: "1e3" read as 1,000 trunks.
    await page.fill(testId('curve-trunks'), '1e3');
    await page.press(testId('curve-trunks'), 'Enter');
    await page.waitForFunction(() => /Trunks: not a whole number: "1e3"/.test(
        document.querySelector('[data-testid="error-message"]').textContent));
    assert.equal(await page.getAttribute(testId('curve'), 'data-state'), 'error');
    // Esc dismisses the message.
    await page.keyboard.press('Escape');
    await page.waitForSelector(testId('error-banner'), {state: 'hidden'});

    // A long curve: progress as trunks finish, then cancel.
    const cancelledBefore = await slow.metric('dgrid_orchestrator_grids_total{status="cancelled"}');
    await page.fill(testId('curve-trunks'), '200');
    // From the keyboard: Run turns off, and the focus goes on to Cancel.
    await page.focus(testId('curve-run'));
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.activeElement?.dataset.testid === 'curve-cancel');
    await page.waitForSelector(testId('error-banner'), {state: 'hidden'});
    // Busy while it runs: a screen reader hears how it ends, not each trunk.
    assert.equal(await page.getAttribute(testId('curve-status-box'), 'aria-busy'), 'true');
    await page.waitForFunction(() => /[1-9]\d* of 200 trunks done/.test(
        document.querySelector('[data-testid="curve-status"]').textContent), null, {timeout: 90_000});
    assert.equal(await page.isVisible(testId('curve-progress')), true);
    const fraction = await page.$eval(testId('curve-progress'), (bar) => bar.value);
    assert.ok(fraction > 0 && fraction < 1, `progress ${fraction}`);
    await screenshot(page, '11-curve-progress');
    // Run again would have dropped the running curve unasked.
    assert.equal(await page.isDisabled(testId('curve-run')), true, 'Run is off while a curve runs');
    // Cancel from the keyboard: the focus goes on from Run (it was lost
    // with the Cancel button, which hides).
    await page.keyboard.press('Enter');
    assert.equal(await waitForCurve(page), 'cancelled');
    await page.waitForFunction(() => document.activeElement?.dataset.testid === 'curve-run');
    assert.equal(await page.isDisabled(testId('curve-run')), false);
    assert.match(await page.textContent(testId('curve-status')), /Cancelled after \d+ of 200 trunks/);
    assert.equal(await page.getAttribute(testId('curve-status-box'), 'aria-busy'), 'false');
    assert.equal(await page.isVisible(testId('error-banner')), false, 'a cancel is not an error');
    // The server stops the curve's grids: they end cancelled and no job
    // stays in flight (200 trunks would keep the replica busy for minutes).
    await eventually(async () =>
      await slow.metric('dgrid_orchestrator_grids_total{status="cancelled"}') > cancelledBefore &&
          await slow.metric('dgrid_orchestrator_replica_inflight', {prefix: true}) === 0,
    30_000, 'the curve\'s grids cancelled on the server');

    // A running grid has a Stop button too (there was none): the grid stops
    // on the server, and the cells that came stay.
    const cancelledGrids = await slow.metric('dgrid_orchestrator_grids_total{status="cancelled"}');
    await fillGrid(page, {seed: '61', steps: '50', rows: '0,5,10,15,20,25,30,35', cols: '8'});
    await page.click(testId('run'));
    await page.waitForSelector(`${testId('grid-stop')}:not([hidden])`);
    await page.waitForSelector(`${testId('cell')}[data-loaded="true"]`, {timeout: 60_000});
    await page.click(testId('grid-stop'));
    await page.waitForFunction(() => document.querySelector('[data-testid="grid"]').dataset.state === 'cancelled');
    assert.match(await page.textContent(testId('status-text')), /^Stopped after \d+ of 65 images\.$/);
    assert.equal(await page.isVisible(testId('grid-stop')), false);
    assert.equal(await page.isVisible(testId('error-banner')), false, 'a stop is not an error');
    // The cells that never came say so, and no longer look on their way.
    const missing = page.locator(`${testId('cell')}[disabled]`).first();
    assert.match(await missing.getAttribute('aria-label'), /: not drawn \(stopped\)$/);
    assert.equal(await missing.evaluate((node) => getComputedStyle(node).animationName), 'none');
    await eventually(async () =>
      await slow.metric('dgrid_orchestrator_grids_total{status="cancelled"}') > cancelledGrids,
    30_000, 'the stopped grid cancelled on the server');
    // Back, then Forward to the stopped grid: it stays stopped (it ran again
    // whole, unasked).
    const stoppedUrl = page.url();
    await page.goBack();
    await page.goForward();
    assert.equal(page.url(), stoppedUrl);
    await page.waitForFunction(() => /was stopped/.test(document.querySelector('[data-testid="status-text"]').textContent));
    assert.equal(await page.getAttribute(testId('grid'), 'data-state'), 'idle');
    assert.equal(await page.inputValue(testId('seed')), '61');
    // Run grid on it: once planned, the entry holds a running grid, not a
    // stopped one (the flag stayed, and a later Back showed nothing).
    await page.click(testId('run'));
    await page.waitForSelector(`${testId('cell')}[data-loaded="true"]`, {timeout: 60_000});
    assert.equal(await page.evaluate(() => history.state), null);
    assert.equal(page.url(), stoppedUrl);
    await page.click(testId('grid-stop'));
    await page.waitForFunction(() => document.querySelector('[data-testid="grid"]').dataset.state === 'cancelled');
  }));

  test('12. an SDXL-style model: size and crop fields, sent as its size conditioning and kept in the URL',
      {timeout: 150_000, skip: XL_MODEL ? false : 'no SDXL-shaped fixture'}, async () => {
    const xl = new LiveStack({name: 'xl', denoisers: 1, models: [modelDir(), XL_MODEL]});
    try {
      await xl.start();
      await withPage('12-size', async (page) => {
        await openPage(page, xl.url);
        assert.equal(await page.isVisible(testId('size-field')), false, 'a class model has no sizes');
        await fillGrid(page, {model: 'textxl'});
        await page.waitForSelector(testId('size-field'), {state: 'visible'});
        assert.equal(await page.getAttribute(testId('original'), 'placeholder'), '32x32');
        assert.equal(await page.getAttribute(testId('target'), 'placeholder'), '32x32');
        await runGrid(page, {seed: '5', steps: '4', rows: '0,2', cols: '1',
          original: '16x24', crop: '4x2'});
        await waitForGrid(page);
        const url = new URL(page.url());
        assert.equal(url.searchParams.get('original'), '16x24');
        assert.equal(url.searchParams.get('crop'), '4x2');
        assert.match(await page.textContent(testId('summary')), /Size 16×24, crop 4×2, target 32×32\./);
        await screenshot(page, '12-size');
        // A malformed size is refused in the page, naming the field.
        await fillGrid(page, {original: 'big'});
        await page.click(testId('run'));
        await page.waitForFunction(() => /^Original size: give two whole numbers/.test(
            document.querySelector('[data-testid="error-message"]').textContent));
      });
    } finally {
      await xl.stop();
    }
  });

  test('13. a curve whose orchestrator falls silent ends with UNAVAILABLE and is cancelled on the server',
      {timeout: 150_000}, () => withPage('13-curve-silence', async (page) => {
    // The page's clock, so that its 60 s of silence pass at once.
    await page.clock.install();
    await openPage(page, slow.url);
    await page.fill(testId('token'), TOKEN);
    await page.press(testId('token'), 'Tab');
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="prompt"] option').length > 1);
    await fillGrid(page, {...CURVE_GRID, seed: '71'});
    await page.fill(testId('curve-trunks'), '200');
    await page.click(testId('curve-run'));
    await page.waitForFunction(() => /[1-9]\d* of 200 trunks done/.test(
        document.querySelector('[data-testid="curve-status"]').textContent), null, {timeout: 90_000});
    const cancelledBefore = await slow.metric('dgrid_orchestrator_grids_total{status="cancelled"}');
    const orchestrator = slow.children.find((child) => child.logName === 'orchestrator');
    orchestrator.kill('SIGSTOP');
    try {
      // The page's clock runs on with the real one: a margin for a busy
      // machine between the last event and now.
      await page.clock.fastForward(30_000);
      assert.equal(await page.getAttribute(testId('curve'), 'data-state'), 'running');
      await page.clock.fastForward(31_000);
      assert.equal(await waitForCurve(page, 10_000), 'error');
      assert.equal(await page.textContent(testId('error-code')), 'UNAVAILABLE');
      assert.match(await page.textContent(testId('error-message')),
          /no word from the orchestrator for 60 s/);
    } finally {
      orchestrator.kill('SIGCONT');
    }
    // The page let the connection go: the curve's grids end on the server.
    await eventually(async () =>
      await slow.metric('dgrid_orchestrator_grids_total{status="cancelled"}') > cancelledBefore &&
          await slow.metric('dgrid_orchestrator_replica_inflight', {prefix: true}) === 0,
    30_000, 'the silent curve\'s grids cancelled on the server');
  }));

  test('14. a shared link run with Enter in the token box keeps its grid', {timeout: 90_000},
      () => withPage('14-link-token', async (page) => {
    // No token yet (a new tab): the models cannot load, and the link waits.
    await openPage(page, `${slow.url}?prompt=coat&seed=7&steps=10&rows=0,5&cols=2`);
    await page.waitForSelector(`${testId('error-banner')}:not([hidden])`);
    await page.fill(testId('token'), TOKEN);
    // Enter: the token's change, then the form's submit, before the models
    // come. The submit used to read the empty form and write its URL.
    await page.press(testId('token'), 'Enter');
    await waitForGrid(page);
    const url = new URL(page.url());
    assert.equal(url.searchParams.get('prompt'), 'coat');
    assert.equal(url.searchParams.get('seed'), '7');
    assert.equal(await page.inputValue(testId('prompt')), 'coat');
    assert.match(await page.textContent(testId('status-text')), /^Done: 5 images/);
  }));

  test('15. a link waiting for the models runs the form once it is edited', {timeout: 90_000},
      () => withPage('15-link-edited', async (page) => {
    await openPage(page, `${slow.url}?prompt=coat&seed=7&steps=10&rows=0,5&cols=2`);
    await page.waitForSelector(`${testId('error-banner')}:not([hidden])`);
    // Edits while the link waits: Run grid ran the link's grid, the screen
    // showing the edits.
    await page.fill(testId('seed'), '8');
    await page.fill(testId('cols'), '1');
    await page.fill(testId('token'), TOKEN);
    await page.click(testId('run'));
    await waitForGrid(page);
    const url = new URL(page.url());
    assert.equal(url.searchParams.get('seed'), '8');
    assert.equal(url.searchParams.get('cols'), '1');
    assert.equal(url.searchParams.get('prompt'), 'coat');
    assert.match(await page.textContent(testId('status-text')), /^Done: 3 images/);

    // A link without a seed names no grid to run, but still its prompt (it
    // opened on the first class, keeping the link's other fields).
    await openPage(page, `${slow.url}?prompt=bag&steps=12`);
    await page.waitForFunction(() => document.body.dataset.ready === 'true');
    assert.equal(await page.inputValue(testId('prompt')), 'bag');
    assert.equal(await page.inputValue(testId('steps')), '12');
    assert.equal(await page.locator(`${testId('cell')}`).count(), 0, 'no grid runs');
  }));
  test('16. a promoted row-0 branch is named promoted, a tap is not the next grid\'s focus, arrows pass ' +
      'cells that never came, "unconditional" survives a refill, a seedless link clears to its seed',
  {timeout: 150_000}, () => withPage('16-edges', async (page) => {
    const accepts = new Map();
    page.on('request', (request) => {
      const {pathname} = new URL(request.url());
      if (pathname.startsWith('/api/v1/')) accepts.set(pathname.slice('/api/v1/'.length), request.headers().accept);
    });
    await openPage(page, main.url);
    // The token box's change loads the models again and refills the form.
    await page.selectOption(testId('prompt'), '');
    const reloaded = page.waitForResponse((response) => response.url().endsWith('/api/v1/models'));
    await page.fill(testId('token'), 'unused');
    await page.dispatchEvent(testId('token'), 'change');
    await reloaded;
    assert.equal(await page.inputValue(testId('prompt')), '', '"unconditional" stays chosen');
    await page.fill(testId('token'), '');
    await page.dispatchEvent(testId('token'), 'change');
    await runGrid(page);
    assert.equal(accepts.get('models'), 'application/json');
    assert.equal(accepts.get('grid/stream'), 'text/event-stream');

    // Arrow keys pass a cell that never came (a stopped grid's) to the next.
    await page.evaluate(() => {
      document.querySelector('[data-testid="cell"][data-row="1"][data-col="0"]').disabled = true;
    });
    await page.focus(cell(0, 0));
    await page.keyboard.press('ArrowDown');
    assert.equal(await page.evaluate(() => document.activeElement?.dataset.row), '2', 'ArrowDown reached row 2');

    // A tap shows a cell's trajectory; the next grid's panel shows its trunk.
    await page.dispatchEvent(cell(2, 1), 'pointerdown', {pointerType: 'touch', bubbles: true});
    await page.dispatchEvent(cell(2, 1), 'click', {detail: 1, bubbles: true});
    await page.waitForSelector(`${testId('trajectory')}[data-focus="2,1"]`);
    await page.click(testId('dice'));
    await waitForGrid(page);
    assert.equal(await page.getAttribute(testId('trajectory'), 'data-focus'), 'trunk');

    // A row-0 branch's path has one segment, as a seed's trunk has.
    const row0 = await page.getAttribute(cell(0, 1), 'data-path');
    await page.click(cell(0, 1));
    await page.waitForURL((url) => url.searchParams.get('trunk') === row0);
    await waitForGrid(page);
    assert.match(await page.textContent(testId('trunk-caption')), /^a promoted branch/);
    assert.match(await page.getAttribute(testId('download-png'), 'download'), /-promoted\.png$/);

    // A link with a trunk and no seed: clearing the trunk runs the trunk's
    // seed, and its URL names it.
    const seed = row0.split('_')[0];
    await openPage(page, `${main.url}?steps=20&rows=0,5&cols=2&trunk=${row0}`);
    await waitForGrid(page);
    await page.click(testId('clear-trunk'));
    await page.waitForURL((url) => !url.searchParams.has('trunk'));
    await waitForGrid(page);
    assert.equal(new URL(page.url()).searchParams.get('seed'), seed);
    assert.equal(await page.inputValue(testId('seed')), seed);
  }));

  test('17. the dice waits for the models: without them it runs nothing', {timeout: 90_000},
      () => withPage('17-dice-early', async (page) => {
    await openPage(page, `${slow.url}?prompt=coat&steps=10&rows=0,5&cols=2`);
    await page.waitForSelector(`${testId('error-banner')}:not([hidden])`);
    const before = page.url();
    const tried = page.waitForResponse((response) => response.url().endsWith('/api/v1/models'));
    await page.click(testId('dice'));
    await tried;  // the models asked for again, refused again (no token)
    await new Promise((done) => setTimeout(done, 500));
    assert.equal(page.url(), before, 'no grid ran, and no view was pushed');
    assert.equal(await page.locator(testId('cell')).count(), 0);
    await page.fill(testId('token'), TOKEN);
    await page.dispatchEvent(testId('token'), 'change');
    await page.waitForFunction(() => document.querySelector('[data-testid="prompt"]').value === 'coat');
    await page.click(testId('dice'));
    await waitForGrid(page);
    assert.equal(new URL(page.url()).searchParams.get('prompt'), 'coat');
  }));
  test('18. a refused request leaves the URL; a number past its type names the field; a cleared switch ' +
      'drops the trunk\'s noise; on a phone, Run brings the status into view and narrow columns are numbered',
  {timeout: 150_000}, () => withPage('18-phone-and-refusals', async (page) => {
    await openPage(page, main.url);
    await runGrid(page);
    // A request the server refuses before its plan: the grid on screen and
    // its URL stay, and no history entry is added.
    const before = page.url();
    const entries = await page.evaluate(() => history.length);
    await fillGrid(page, {steps: '-5'});
    await page.click(testId('run'));
    await page.waitForSelector(`${testId('error-banner')}:not([hidden])`);
    assert.match(await page.textContent(testId('error-message')), /^Steps must be in \[1, /);
    assert.equal(page.url(), before, 'the refused request is not in the URL');
    assert.equal(await page.evaluate(() => history.length), entries);
    // Past int32 the message named the request's number type.
    await fillGrid(page, {steps: '99999999999'});
    await page.click(testId('run'));
    await page.waitForSelector(`${testId('error-banner')}:not([hidden])`);
    assert.equal(await page.textContent(testId('error-message')),
        'Steps: "99999999999" is far too large');
    await page.click(testId('error-dismiss'));
    // The trunk's noise goes with the switch it needs.
    const classes = await page.$$eval(`${testId('prompt')} option`, (nodes) => nodes.map((n) => n.value));
    await fillGrid(page, {steps: GRID.steps, switch: classes[2], noise: 'trunk'});
    await page.selectOption(testId('switch'), '');
    assert.equal(await page.inputValue(testId('noise')), '');

    // On a phone the form comes first: Run brings the status into view,
    // and six columns are numbered (their "branch N" heads ran together).
    await page.setViewportSize(PHONE);
    await page.evaluate(() => window.scrollTo(0, 0));
    await fillGrid(page, {...GRID, cols: '6'});
    await page.click(testId('run'));
    await page.waitForFunction(() => {
      const top = document.querySelector('[data-testid="status"]').getBoundingClientRect().top;
      return top >= 0 && top < window.innerHeight;
    }, null, {timeout: 10_000});
    await waitForGrid(page);
    assert.deepEqual(await page.$$eval('.col-head', (nodes) => nodes.map((n) => n.textContent)),
        ['1', '2', '3', '4', '5', '6']);
  }));
  test('19. linspace spacing: the preset stops before its noiseless last DDIM step; the grid, its ' +
      'summary and its link keep the spacing', {timeout: 90_000}, () => withPage('19-linspace', async (page) => {
    await openPage(page, main.url);
    const rowsPlaceholder = () => page.getAttribute(testId('rows'), 'placeholder');
    // fashion-mnist, steps_offset 1: leading's last step runs timestep 1 and
    // adds noise; linspace's runs timestep 0, which adds none.
    await fillGrid(page, {steps: '5', rows: '', spacing: 'leading'});
    assert.equal(await rowsPlaceholder(), 'preset: 0,1,2,3,4 of 5');
    await fillGrid(page, {spacing: 'linspace'});
    assert.equal(await rowsPlaceholder(), 'preset: 0,1,2,3 of 5');
    // Euler ancestral runs linspace's fractions: this model takes them.
    await runGrid(page, {seed: '7', steps: '12', rows: '0,4,8', cols: '2', spacing: 'linspace',
      sampler: 'euler_ancestral'});
    assert.equal(new URL(page.url()).searchParams.get('spacing'), 'linspace');
    assert.match(await page.textContent(testId('summary')), /linspace spacing/);
    // Rows are labelled with the rounded timesteps: after step 4 of 12,
    // 8 * 999 / 11 = 726.5.
    assert.match(await page.textContent('.row-label >> nth=1'), /t = 727/);
  }));
});
