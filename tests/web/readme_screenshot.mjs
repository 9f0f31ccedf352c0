// Redraws docs/explorer.png, the README's explorer screenshot: the shipped
// bundles (models/emoji first, models/fashion-mnist) behind two denoisers,
// a text prompt's grid, and a hovered branch showing its trajectory.
//
//   node tests/web/readme_screenshot.mjs [OUT.png] [PROMPT]
//
// Not a test: run it by hand after scripts/test.sh built the binaries.
import {mkdtempSync, rmSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {join} from 'node:path';
import {chromium} from 'playwright-core';
import {LiveStack, REPO} from './stack.mjs';

const out = process.argv[2] || join(REPO, 'docs', 'explorer.png');
const prompt = process.argv[3] || 'red apple, noto';
const id = (name) => `[data-testid="${name}"]`;

const stack = new LiveStack({name: 'readme', denoisers: 2,
  models: [join(REPO, 'models', 'emoji'), join(REPO, 'models', 'fashion-mnist')]});
const userDataDir = mkdtempSync(join(tmpdir(), 'dgrid-chromium-'));
let context;
try {
  await stack.start();
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.DGRID_CHROMIUM || '/usr/bin/chromium', headless: true,
    viewport: {width: 1280, height: 900},
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  });
  const page = await context.newPage();
  await page.goto(`${stack.url}?seed=7`, {waitUntil: 'load'});
  await page.waitForSelector('body[data-ready="true"]');
  await page.fill(id('prompt-text'), prompt);
  await page.click(id('run'));
  await page.waitForFunction(() => document.querySelector('[data-testid="grid"]').dataset.state === 'done',
      null, {timeout: 120_000});
  await page.hover(`${id('cell')}[data-row="2"][data-col="1"]`);
  await page.waitForSelector(`${id('trajectory')}[data-focus="2,1"]`);
  await page.screenshot({path: out, fullPage: true, animations: 'disabled'});
  console.log(`wrote ${out}`);
} finally {
  await context?.close().catch(() => {});
  await stack.stop();
  rmSync(userDataDir, {recursive: true, force: true});
}
