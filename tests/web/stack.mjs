// A live Diffusion Grid stack on loopback for the browser tests: denoisers
// and an orchestrator with its HTTP gateway serving clients/web, on free
// ports, stopped at the end (also when the test process is told to stop).
//
//   const stack = new LiveStack({name: 'main', denoisers: 2});
//   await stack.start();   // stack.url = "http://127.0.0.1:PORT/"
//   await stack.metric('dgrid_orchestrator_grids_total{status="cancelled"}');
//   ...
//   await stack.stop();
//
// Environment: DGRID_BIN_DIR (default <repo>/build/bin), DGRID_TEST_MODEL
// (default <repo>/models/fashion-mnist; while that bundle does not exist,
// the Gaussian test fixture in $DGRID_FIXTURES/gaussian, by default
// <build>/fixtures/gaussian), DGRID_TEXT_MODEL (a text-conditioned bundle;
// default $DGRID_FIXTURES/textlatent when it exists).

import {spawn, spawnSync} from 'node:child_process';
import {existsSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import {tmpdir} from 'node:os';
import {dirname, join, resolve} from 'node:path';
import {fileURLToPath} from 'node:url';
import {setTimeout as sleep} from 'node:timers/promises';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN_DIR = process.env.DGRID_BIN_DIR || join(REPO, 'build', 'bin');

export function modelDir() {
  if (process.env.DGRID_TEST_MODEL) return process.env.DGRID_TEST_MODEL;
  const shipped = join(REPO, 'models', 'fashion-mnist');
  if (existsSync(join(shipped, 'manifest.json'))) return shipped;
  const fixture = join(process.env.DGRID_FIXTURES || join(BIN_DIR, '..', 'fixtures'), 'gaussian');
  if (existsSync(join(fixture, 'manifest.json'))) return fixture;
  throw new Error(`no model: ${shipped} has no manifest.json and no fixture at ${fixture} ` +
      '(set DGRID_TEST_MODEL)');
}

// The text-to-image bundle for the text tests, or null when there is none.
export function textModelDir() {
  const dir = process.env.DGRID_TEXT_MODEL ||
      join(process.env.DGRID_FIXTURES || join(BIN_DIR, '..', 'fixtures'), 'textlatent');
  return existsSync(join(dir, 'manifest.json')) ? dir : null;
}

// Children get SIGKILL if this process dies before it can stop them
// (setpriv's parent-death signal), and are killed on exit and on signals.
const live = new Set();
const PDEATHSIG = spawnSync('setpriv', ['--help'], {encoding: 'utf8'}).stdout?.includes('--pdeathsig');

process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});
for (const [signal, number] of [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]]) {
  process.once(signal, () => {
    for (const child of live) child.kill('SIGKILL');
    process.exit(128 + number);
  });
}

function readPorts(file) {
  if (!existsSync(file)) return null;
  const ports = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const [key, value] = line.split('=');
    if (key && value) ports[key.trim()] = Number(value);
  }
  return ports;
}

export class LiveStack {
  // denoisers: how many replicas; models: the bundles each one serves
  // (default: modelDir()); stepDelayMs: the denoisers' test-only slowdown
  // before each forward pass; authToken: the orchestrator requires this
  // bearer token.
  constructor({name, denoisers = 1, models = null, stepDelayMs = 0, authToken = null,
    startTimeoutMs = 90_000}) {
    this.name = name;
    this.denoiserCount = denoisers;
    this.stepDelayMs = stepDelayMs;
    this.authToken = authToken;
    this.startTimeoutMs = startTimeoutMs;
    this.dir = mkdtempSync(join(tmpdir(), `dgrid-web-${name}-`));
    this.children = [];
    this.url = '';
    this.models = models ?? [modelDir()];
  }

  spawnLogged(name, binary, args) {
    const log = openSync(join(this.dir, `${name}.log`), 'w');
    const command = PDEATHSIG ? 'setpriv' : binary;
    const argv = PDEATHSIG ? ['--pdeathsig', 'KILL', binary, ...args] : args;
    const child = spawn(command, argv, {stdio: ['ignore', log, log]});
    closeSync(log);
    child.logName = name;
    child.exited = new Promise((done) => child.once('exit', done));
    live.add(child);
    child.once('exit', () => live.delete(child));
    this.children.push(child);
    return child;
  }

  async waitForPorts(child, file, key) {
    const deadline = Date.now() + this.startTimeoutMs;
    while (Date.now() < deadline) {
      const ports = readPorts(file);
      if (ports && ports[key] > 0) return ports;
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`${child.logName} exited before serving:\n${this.log(child.logName)}`);
      }
      await sleep(100);
    }
    throw new Error(`${child.logName}: no ${key} port after ${this.startTimeoutMs} ms:\n${this.log(child.logName)}`);
  }

  // Every process's last log lines, for a failure report.
  logs() {
    return this.children.map((child) => `--- ${this.name}/${child.logName}\n${this.log(child.logName)}`).join('\n');
  }

  log(name) {
    try {
      return readFileSync(join(this.dir, `${name}.log`), 'utf8').split('\n').slice(-30).join('\n');
    } catch {
      return '(no log)';
    }
  }

  async start() {
    const denoisers = [];
    for (let i = 0; i < this.denoiserCount; i++) {
      const portFile = join(this.dir, `denoiser${i}.port`);
      const args = [`--model_dir=${this.models.join(',')}`, '--listen=127.0.0.1:0', '--metrics_addr=',
        '--threads=1', `--port_file=${portFile}`];
      // A slow stack also runs few rows per pass, so that a grid's cells
      // finish over many passes rather than in the last one or two: the
      // streaming test must see a grid part-way, even on a busy machine.
      if (this.stepDelayMs > 0) args.push(`--debug_step_delay_ms=${this.stepDelayMs}`, '--max_batch=4');
      denoisers.push([this.spawnLogged(`denoiser${i}`, join(BIN_DIR, 'dgrid-denoiser'), args), portFile]);
    }
    const addresses = [];
    for (const [child, portFile] of denoisers) {
      const ports = await this.waitForPorts(child, portFile, 'grpc');
      addresses.push(`127.0.0.1:${ports.grpc}`);
    }
    const portFile = join(this.dir, 'orchestrator.port');
    const args = [`--denoisers=${addresses.join(',')}`, '--listen=127.0.0.1:0', '--metrics_addr=127.0.0.1:0',
      '--http_addr=127.0.0.1:0', `--web_dir=${join(REPO, 'clients', 'web')}`, `--port_file=${portFile}`];
    if (this.authToken) {
      const tokenFile = join(this.dir, 'token');
      writeFileSync(tokenFile, this.authToken, {mode: 0o600});
      args.push(`--auth_token_file=${tokenFile}`);
    }
    const orchestrator = this.spawnLogged('orchestrator', join(BIN_DIR, 'dgrid-orchestrator'), args);
    const ports = await this.waitForPorts(orchestrator, portFile, 'http');
    this.url = `http://127.0.0.1:${ports.http}/`;
    this.metricsUrl = `http://127.0.0.1:${ports.metrics}/metrics`;
    await this.waitHealthy();
    return this;
  }

  // The orchestrator's metric `series` (name and labels, as exposed), summed
  // over the series that start with it when `prefix`; 0 when absent.
  async metric(series, {prefix = false} = {}) {
    const text = await (await fetch(this.metricsUrl, {signal: AbortSignal.timeout(5000)})).text();
    let sum = 0;
    for (const line of text.split('\n')) {
      const space = line.lastIndexOf(' ');
      const name = line.slice(0, space);
      if (name === series || (prefix && name.startsWith(series))) sum += Number(line.slice(space + 1));
    }
    return sum;
  }

  async waitHealthy() {
    const deadline = Date.now() + this.startTimeoutMs;
    while (Date.now() < deadline) {
      try {
        const response = await fetch(`${this.url}healthz`, {signal: AbortSignal.timeout(2000)});
        if (response.ok) return;
      } catch {
        // not up yet
      }
      await sleep(100);
    }
    throw new Error(`orchestrator HTTP not healthy at ${this.url}:\n${this.log('orchestrator')}`);
  }

  // SIGTERM in reverse start order, SIGKILL after a grace period.
  async stop() {
    for (const child of [...this.children].reverse()) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      child.kill('SIGTERM');
      const stopped = await Promise.race([child.exited.then(() => true), sleep(8000).then(() => false)]);
      if (!stopped) {
        child.kill('SIGKILL');
        await child.exited;
      }
    }
    this.children = [];
    rmSync(this.dir, {recursive: true, force: true});
  }
}
