// Renders every overlay under deploy/k8s/overlays with `kubectl kustomize`
// and validates each object against the Kubernetes OpenAPI schemas
// (kubernetes-models) or, for ServiceMonitor and PrometheusRule, the
// Prometheus Operator CRD schemas (@kubernetes-models/prometheus-operator).
//
//   node validate.mjs --kubectl=/usr/bin/kubectl [--overlays=DIR,DIR]
//
// An object fails when
//   - its apiVersion/kind has no schema here (a typo, or a CRD nobody
//     installs would be refused by the API server just the same);
//   - a value breaks the schema (types, enums, required fields, formats);
//   - it has a field the schema does not declare. The OpenAPI schemas allow
//     unknown fields, but `kubectl apply` asks the API server for strict
//     field validation, which refuses them; so a field counts as declared
//     only if the schema rejects an impossible value there (see
//     undeclaredFields).
// Then the check checks itself: it breaks copies of the rendered objects
// (BREAKS) and fails unless each copy is refused for the reason meant.
//
// Exit codes: 0 pass, 1 fail, 77 skipped (no kubectl).
import {execFileSync} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {fileURLToPath} from 'node:url';

import * as prometheusOperator from '@kubernetes-models/prometheus-operator';
import * as kubernetes from 'kubernetes-models';
import {parseAllDocuments} from 'yaml';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const OVERLAYS = path.join(ROOT, 'deploy/k8s/overlays');

// apiVersion/kind -> model class, from every group version both packages export.
function modelsByType() {
  const models = new Map();
  const walk = (namespace, depth) => {
    for (const value of Object.values(namespace)) {
      if (typeof value === 'function' && value.apiVersion && value.kind) {
        models.set(`${value.apiVersion}/${value.kind}`, value);
      } else if (value && typeof value === 'object' && depth < 3) {
        walk(value, depth + 1);
      }
    }
  };
  walk(kubernetes, 0);
  walk(prometheusOperator, 0);
  return models;
}

function render(kubectl, overlay) {
  const text = execFileSync(kubectl, ['kustomize', overlay], {encoding: 'utf8'});
  const docs = parseAllDocuments(text);
  const objects = [];
  for (const doc of docs) {
    if (doc.errors.length) throw new Error(`${overlay}: YAML: ${doc.errors[0].message}`);
    const object = doc.toJS();
    if (object) objects.push(object);
  }
  return objects;
}

function name(object) {
  return `${object?.kind}/${object?.metadata?.name}`;
}

// The schema's errors for `object` (empty when it is valid).
function schemaErrors(object, Model) {
  try {
    Model.prototype.validate.call(object);
    return [];
  } catch (e) {
    if (!e.errors) throw e;
    return e.errors.map((err) => `${err.instancePath || '/'} ${err.message}`);
  }
}

// A value no Kubernetes schema admits (JSON has no functions): a declared
// field, whatever its type, refuses it; an undeclared one lets it through.
const IMPOSSIBLE = () => {};

// JSON pointers of the fields of a valid `object` that its schema does not
// declare. Each field in turn is set to IMPOSSIBLE; if the object still
// validates, nothing in the schema is there. Map-valued fields (labels,
// annotations, resources.limits) declare their values, so their keys pass.
function undeclaredFields(object, Model) {
  const found = [];
  const visit = (node, pointer) => {
    if (Array.isArray(node)) {
      node.forEach((item, i) => visit(item, `${pointer}/${i}`));
      return;
    }
    if (!node || typeof node !== 'object') return;
    for (const key of Object.keys(node)) {
      const here = `${pointer}/${key.replaceAll('~', '~0').replaceAll('/', '~1')}`;
      const value = node[key];
      node[key] = IMPOSSIBLE;
      const declared = schemaErrors(object, Model).length > 0;
      node[key] = value;
      if (declared) {
        visit(value, here);
      } else {
        found.push(here);
      }
    }
  };
  visit(object, '');
  return found;
}

// Problems with one object, each naming the object.
function checkObject(object, models) {
  const type = `${object?.apiVersion}/${object?.kind}`;
  const Model = models.get(type);
  if (!Model) {
    return [`${name(object)}: no schema for ${type} (kubernetes-models, prometheus-operator)`];
  }
  const errors = schemaErrors(object, Model);
  if (errors.length) return errors.map((e) => `${name(object)}: ${e}`);
  return undeclaredFields(object, Model).map((p) => `${name(object)}: unknown field ${p}`);
}

function checkAll(objects, models) {
  return objects.flatMap((object) => checkObject(object, models));
}

// ------------------------------------------------------------- self-test ---

function find(objects, kind, nameOrUndefined) {
  return objects.find((o) => o.kind === kind &&
                             (nameOrUndefined === undefined || o.metadata.name === nameOrUndefined));
}

function orchestratorContainer(objects) {
  return find(objects, 'Deployment', 'dgrid-orchestrator').spec.template.spec.containers[0];
}

// [what, the error it must cause, applies to these objects?, break them].
const BREAKS = [
  ['containerPort given as a string', /containers\/0\/ports\/0\/containerPort must be integer/,
    (o) => find(o, 'Deployment', 'dgrid-orchestrator'),
    (o) => { orchestratorContainer(o).ports[0].containerPort = String(orchestratorContainer(o).ports[0].containerPort); }],
  ['misspelt field name', /unknown field \/spec\/template\/spec\/containers\/0\/readinesProbe/,
    (o) => find(o, 'Deployment', 'dgrid-orchestrator'),
    (o) => {
      const c = orchestratorContainer(o);
      c.readinesProbe = c.readinessProbe;
      delete c.readinessProbe;
    }],
  ['kind with no schema', /no schema for v1\/Servce/,
    (o) => find(o, 'Service'),
    (o) => { find(o, 'Service').kind = 'Servce'; }],
  ['probe handler with a string period', /readinessProbe\/periodSeconds must be integer/,
    (o) => find(o, 'Deployment', 'dgrid-denoiser'),
    (o) => { find(o, 'Deployment', 'dgrid-denoiser').spec.template.spec.containers[0].readinessProbe.periodSeconds = '5'; }],
  ['ServiceMonitor endpoint without a port of the right type', /endpoints\/0\/port must be string/,
    (o) => find(o, 'ServiceMonitor'),
    (o) => { find(o, 'ServiceMonitor').spec.endpoints[0].port = 9090; }],
  ['misspelt field in a CRD object', /unknown field \/spec\/endpoints\/0\/intervall/,
    (o) => find(o, 'ServiceMonitor'),
    (o) => {
      const endpoint = find(o, 'ServiceMonitor').spec.endpoints[0];
      endpoint.intervall = endpoint.interval;
      delete endpoint.interval;
    }],
  ['PrometheusRule group without a name', /groups\/0 must have required property '?name'?/,
    (o) => find(o, 'PrometheusRule'),
    (o) => { delete find(o, 'PrometheusRule').spec.groups[0].name; }],
  ['Ingress pathType not in the enum', /pathType must be equal to one of the allowed values/,
    (o) => find(o, 'Ingress'),
    (o) => { find(o, 'Ingress').spec.rules[0].http.paths[0].pathType = 'Prefixed'; }],
];

// The breaks that apply to `objects`, each on a fresh copy. Returns the ones
// that were not refused as meant.
function selfTest(label, objects, models) {
  const missed = [];
  let ran = 0;
  for (const [what, want, applies, breakCopy] of BREAKS) {
    if (!applies(objects)) continue;
    const copy = structuredClone(objects);
    breakCopy(copy);
    const errors = checkAll(copy, models);
    const hit = errors.find((e) => want.test(e));
    ran++;
    if (hit) {
      console.log(`  caught: ${what}: ${hit}`);
    } else {
      missed.push(`${label}: ${what}: want an error matching ${want}, got ${JSON.stringify(errors)}`);
    }
  }
  if (!objects.some((o) => o.kind === 'Deployment')) missed.push(`${label}: no Deployment to break`);
  return {missed, ran};
}

function main() {
  const args = Object.fromEntries(process.argv.slice(2).map((a) => {
    const m = a.match(/^--([a-z_]+)=(.*)$/);
    if (!m) throw new Error(`unexpected argument ${a}`);
    return [m[1], m[2]];
  }));
  const kubectl = args.kubectl || 'kubectl';
  try {
    execFileSync(kubectl, ['version', '--client'], {stdio: 'ignore'});
  } catch {
    console.log(`SKIP: kubectl not found (${kubectl})`);
    return 77;
  }
  const overlays = args.overlays ? args.overlays.split(',') :
    fs.readdirSync(OVERLAYS).map((d) => path.join(OVERLAYS, d))
        .filter((d) => fs.existsSync(path.join(d, 'kustomization.yaml')));
  const models = modelsByType();
  let failed = false;
  for (const overlay of overlays) {
    const label = path.relative(ROOT, path.resolve(overlay));
    const objects = render(kubectl, overlay);
    const errors = checkAll(objects, models);
    for (const e of errors) console.log(`FAIL: ${label}: ${e}`);
    if (errors.length) {
      failed = true;
      continue;
    }
    console.log(`${label}: ${objects.length} objects valid: ${objects.map(name).join(', ')}`);
    const {missed, ran} = selfTest(label, objects, models);
    for (const m of missed) console.log(`FAIL: self-test: ${m}`);
    if (missed.length) failed = true;
    else console.log(`${label}: self-test: all ${ran} broken copies refused`);
  }
  return failed ? 1 : 0;
}

process.exitCode = main();
