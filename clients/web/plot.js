// Inline SVG charts against the branch step.
//
// divergencePlot: a grid's divergence by row, "when did the model decide?"
// Branches that leave the trunk early differ a lot (high divergence); once
// the picture is settled, late branches barely differ.
//
//   container.replaceChildren(divergencePlot(grid.rows, grid.plan.sampler.steps, grid.plan.branches));
//
// With one branch per row there is no pair: the plots and legends show the
// distance to the trunk alone.
//
// headsPlot and curveDivergencePlot: a decision curve (CurveResult), means
// over trunks with error bars of one standard error. Per judge head,
// P(a branch's label differs from its trunk's), each head's half step (where
// it falls to half its row-0 value) marked with its 68% interval; and the
// mean RMS divergence per row, the only curve of a model without a judge.
//
//   box.replaceChildren(headsPlot(curve), curveDivergencePlot(curve), curveLegend(curve));

const SVG = 'http://www.w3.org/2000/svg';
const SERIES = [
  {key: 'divergence', label: 'between branches', className: 'series-pairwise'},
  {key: 'divergence_to_trunk', label: 'branches to trunk', className: 'series-trunk'},
];
// The divergence series a grid of `branches` per row has.
const seriesFor = (branches) => SERIES.filter((s) => s.key !== 'divergence' || (branches ?? 2) >= 2);

function el(name, attributes = {}, text = '') {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text) node.textContent = text;
  return node;
}

// The axis top and its number of intervals, so that ticks are round:
// 0.5 -> 0, 0.1, ..., 0.5; 0.2 -> 0, 0.05, ..., 0.2.
function niceAxis(value) {
  if (!(value > 0)) return {max: 0.1, ticks: 5};
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const [step, ticks] of [[1, 5], [2, 4], [3, 3], [4, 4], [5, 5], [6, 3], [8, 4], [10, 5]]) {
    if (step * magnitude >= value) return {max: step * magnitude, ticks};
  }
  return {max: 10 * magnitude, ticks: 5};
}

const WIDTH = 360, HEIGHT = 190;
const LEFT = 44, RIGHT = 12, TOP = 12, BOTTOM = 40;
const PLOT_W = WIDTH - LEFT - RIGHT, PLOT_H = HEIGHT - TOP - BOTTOM;

// An SVG with its axes: x the branch steps from 0 to lastStep (a tick at
// each row's step), y from 0 to yMax in `ticks` round intervals. Returns the
// svg and its scales.
function chart({rowSteps, lastStep, yMax, ticks, label, title, yTitle = ''}) {
  const x = (step) => LEFT + (step / lastStep) * PLOT_W;
  const y = (value) => TOP + PLOT_H - (Math.min(Math.max(value, 0), yMax) / yMax) * PLOT_H;
  const svg = el('svg', {viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: 'img', 'aria-label': label, class: 'plot'});
  svg.append(el('title', {}, title));

  // Axes, grid lines and ticks.
  const axes = el('g', {class: 'axes'});
  for (let i = 0; i <= ticks; i++) {
    const value = (yMax * i) / ticks;
    axes.append(el('line', {x1: LEFT, x2: WIDTH - RIGHT, y1: y(value), y2: y(value), class: i ? 'gridline' : 'axis'}));
    axes.append(el('text', {x: LEFT - 6, y: y(value) + 3.5, 'text-anchor': 'end'}, String(Number(value.toFixed(4)))));
  }
  let lastLabelX = -Infinity;
  // The rows' steps, and the axis's end (the trajectory's last step), which
  // a band running past the last row reaches.
  const steps = rowSteps.includes(lastStep) ? rowSteps : [...rowSteps, lastStep];
  for (const step of steps) {
    axes.append(el('line', {x1: x(step), x2: x(step), y1: TOP + PLOT_H, y2: TOP + PLOT_H + 4, class: 'axis'}));
    if (x(step) - lastLabelX >= 16) {
      axes.append(el('text', {x: x(step), y: TOP + PLOT_H + 15, 'text-anchor': 'middle'}, String(step)));
      lastLabelX = x(step);
    }
  }
  axes.append(el('text', {x: LEFT + PLOT_W / 2, y: HEIGHT - 6, 'text-anchor': 'middle', class: 'axis-title'},
      'branch step (branches leave the trunk after it)'));
  if (yTitle) {
    axes.append(el('text', {x: 11, y: TOP + PLOT_H / 2, 'text-anchor': 'middle', class: 'axis-title',
      transform: `rotate(-90 11 ${TOP + PLOT_H / 2})`}, yTitle));
  }
  svg.append(axes);
  return {svg, x, y};
}

export function divergencePlot(rows, steps, branches) {
  const series = seriesFor(branches);
  const lastStep = Math.max(steps || 0, ...rows.map((row) => row.branch_step ?? 0), 1);
  const {max: yMax, ticks} = niceAxis(Math.max(...rows.flatMap((row) => series.map((s) => row[s.key] ?? 0))));
  const {svg, x, y} = chart({
    rowSteps: rows.map((row) => row.branch_step ?? 0), lastStep, yMax, ticks,
    label: 'Divergence of the branches by the step at which they leave the trunk',
    title: 'Divergence by branch step',
  });

  for (const {key, label, className} of series) {
    const group = el('g', {class: className, 'data-series': key});
    const points = rows.map((row) => [x(row.branch_step ?? 0), y(row[key] ?? 0)]);
    group.append(el('polyline', {points: points.map((p) => p.join(',')).join(' '), fill: 'none'}));
    rows.forEach((row, i) => {
      const dot = el('circle', {cx: points[i][0], cy: points[i][1], r: 3.5});
      dot.append(el('title', {}, `step ${row.branch_step ?? 0} (t=${row.timestep ?? 0}): ` +
          `${(row[key] ?? 0).toFixed(3)} ${label}`));
      group.append(dot);
    });
    svg.append(group);
  }
  return svg;
}

export function plotLegend(branches) {
  const legend = document.createElement('ul');
  legend.className = 'legend';
  for (const series of seriesFor(branches)) {
    const item = document.createElement('li');
    item.className = series.className;
    item.innerHTML = '<span class="swatch" aria-hidden="true"></span>';
    item.append(`mean RMS distance ${series.label}`);
    legend.append(item);
  }
  return legend;
}

// ---------- decision curves ----------

// Judge heads take these colours in turn (style.css).
const HEAD_CLASSES = ['head-0', 'head-1', 'head-2', 'head-3'];
const headClass = (index) => HEAD_CLASSES[index % HEAD_CLASSES.length];

// An Estimate's fields (protobuf's JSON leaves zeros out).
const mean = (estimate) => estimate?.mean ?? 0;
const stderr = (estimate) => estimate?.standard_error ?? 0;
// Rounded as C's printf rounds (dgrid and the server's figure print the same
// figures): a value exactly halfway goes to the even digit, where toFixed
// rounds it away from zero (11.25 is 11.2 there, 11.3 from toFixed). The
// value's own decimal digits tell a tie, not its product with 10^digits
// (2.675 * 100 is 267.5, but 2.675 is 2.67499999...).
const fixed = (value, digits) => {
  const x = Number(value ?? 0);
  const exact = x.toFixed(digits + 30);
  const kept = exact.slice(0, exact.length - 30);  // truncated to `digits`
  if (exact.endsWith('5'.padEnd(30, '0')) && Number(kept.replace('.', '').slice(-1)) % 2 === 0) {
    return kept.endsWith('.') ? kept.slice(0, -1) : kept;
  }
  return x.toFixed(digits);
};

function curveSteps(curve) {
  const rowSteps = (curve.rows ?? []).map((row) => row.branch_step ?? 0);
  return {rowSteps, lastStep: Math.max(curve.plan?.sampler?.steps ?? 0, ...rowSteps, 1)};
}

// One series of estimates: its line, and per row an error bar (± one
// standard error) and a dot whose title is describe(row). Where the error is
// 0 (every trunk agrees) and `wide` has the row's 95% interval, that is drawn
// too, dashed.
function estimateSeries(points, rowSteps, {x, y}, attributes, describe, wide = []) {
  const group = el('g', attributes);
  const at = (i) => [x(rowSteps[i]), y(mean(points[i]))];
  group.append(el('polyline', {points: points.map((_, i) => at(i).join(',')).join(' '), fill: 'none'}));
  points.forEach((point, i) => {
    const [cx, cy] = at(i);
    const lo = y(mean(point) - stderr(point));
    const hi = y(mean(point) + stderr(point));
    group.append(el('path', {class: 'error-bar', 'data-testid': 'error-bar', fill: 'none',
      d: `M${cx},${lo}V${hi}M${cx - 4},${lo}h8M${cx - 4},${hi}h8`}));
    if (stderr(point) === 0 && wide[i]) {
      const [top, bottom] = [y(wide[i].hi ?? 0), y(wide[i].lo ?? 0)];
      group.append(el('path', {class: 'error-bar wide', 'data-testid': 'interval-95', fill: 'none',
        d: `M${cx},${bottom}V${top}M${cx - 3},${bottom}h6M${cx - 3},${top}h6`}));
    }
    const dot = el('circle', {cx, cy, r: 3.5});
    dot.append(el('title', {}, describe(i)));
    group.append(dot);
  });
  return group;
}

// A head's half step in words, as dgrid and the server's figure word it
// (common/short_text's DescribeHalfStep).
function describeHalfStep(head, lastRowStep) {
  if (!((head.p_differs?.[0]?.mean ?? 0) > 0)) return 'never differs at the first row, so has no half step';
  // Rounded down: 99.6% is not "found in 100%", which is not printed.
  const fraction = head.half_found_fraction ?? 0;
  const found = fraction < 1 ? ` (found in ${Math.floor(100 * fraction + 1e-9)}% of resamples)` : '';  // 100 * 0.29 is 28.999999999999996
  if (!head.half_found) return `not half its row-0 value by the last row, step ${lastRowStep}${found}`;
  // Resamples still above half at the last row leave the interval open.
  if (head.half_step_hi_after_last_row) {
    return `half its row-0 value at step ${fixed(head.half_step, 1)}, 68% from ` +
        `${fixed(head.half_step_lo ?? 0, 1)} to past step ${lastRowStep}${found}`;
  }
  return `half its row-0 value at step ${fixed(head.half_step, 1)} \u00b1 ` +
      `${fixed(head.half_step_standard_error, 1)}${found}`;
}

// Where a head's curve falls to half its row-0 value: a dashed line across
// at that half and down to the step, and the step's 68% interval over
// bootstrap resamples of the trunks as a band on the x axis (to the axis's
// end when it runs past the last row).
function halfStepMarker(head, name, {x, y}, rowSteps, lastStep) {
  const step = head.half_step ?? 0;
  const level = y(mean(head.p_differs?.[0]) / 2);
  const bottom = TOP + PLOT_H;
  const lo = head.half_step_lo ?? 0;
  const hi = head.half_step_hi_after_last_row ? lastStep : (head.half_step_hi ?? 0);
  const group = el('g', {class: 'half-step', 'data-testid': 'half-step', 'data-head': name, 'data-step': fixed(step, 2)});
  group.append(
      el('rect', {class: 'half-band', x: x(lo), y: bottom - 8, width: Math.max(1, x(hi) - x(lo)), height: 8}),
      el('path', {class: 'half-line', fill: 'none', d: `M${LEFT},${level}H${x(step)}V${bottom}`}),
      el('path', {class: 'half-mark', d: `M${x(step)},${level - 5}l5,5l-5,5l-5,-5z`}));
  const interval = head.half_step_hi_after_last_row ? '' :
    ` (68% interval ${fixed(lo, 1)} to ${fixed(hi, 1)})`;
  group.append(el('title', {}, `${name}: ${describeHalfStep(head, rowSteps.at(-1) ?? 0)}${interval}`));
  return group;
}

export function headsPlot(curve) {
  const rows = curve.rows ?? [];
  const {rowSteps, lastStep} = curveSteps(curve);
  const scales = chart({
    rowSteps, lastStep, yMax: 1, ticks: 4,
    label: 'Per judge head, the probability that a branch\u2019s label differs from its trunk\u2019s, by branch step',
    title: 'P(label differs from the trunk\u2019s) by branch step', yTitle: 'P(label \u2260 trunk\u2019s)',
  });
  (curve.heads ?? []).forEach((head, h) => {
    const name = head.head || `head ${h + 1}`;
    const points = head.p_differs ?? [];
    const group = estimateSeries(points, rowSteps, scales,
        {class: `series-head ${headClass(h)}`, 'data-series': 'head', 'data-head': name},
        (i) => `step ${rowSteps[i]} (t=${rows[i]?.timestep ?? 0}): P(${name} differs) ` +
            `${fixed(mean(points[i]), 3)} ± ${fixed(stderr(points[i]), 3)}` +
            (head.p_differs_95?.[i] ? ` (95%: ${fixed(head.p_differs_95[i].lo, 3)} to ` +
                `${fixed(head.p_differs_95[i].hi, 3)})` : ''),
        head.p_differs_95 ?? []);
    if (head.half_found) group.append(halfStepMarker(head, name, scales, rowSteps, lastStep));
    scales.svg.append(group);
  });
  return scales.svg;
}

export function curveDivergencePlot(curve) {
  const rows = curve.rows ?? [];
  const {rowSteps, lastStep} = curveSteps(curve);
  const series = seriesFor(curve.plan?.branches);
  const top = Math.max(...rows.flatMap((row) => series.map((s) => mean(row[s.key]) + stderr(row[s.key]))));
  const {max: yMax, ticks} = niceAxis(top);
  const scales = chart({
    rowSteps, lastStep, yMax, ticks,
    label: 'Mean RMS divergence of the branches over trunks, by branch step',
    title: 'Mean RMS divergence by branch step', yTitle: 'RMS divergence',
  });
  for (const {key, label, className} of series) {
    const points = rows.map((row) => row[key]);
    scales.svg.append(estimateSeries(points, rowSteps, scales,
        {class: className, 'data-series': key},
        (i) => `step ${rowSteps[i]} (t=${rows[i].timestep ?? 0}): ${fixed(mean(points[i]), 3)} ` +
            `± ${fixed(stderr(points[i]), 3)} ${label}`));
  }
  return scales.svg;
}

// Each head, with where it falls to half its row-0 value, then the
// divergence series.
export function curveLegend(curve) {
  const legend = plotLegend(curve.plan?.branches);
  const heads = (curve.heads ?? []).map((head, h) => {
    const name = head.head || `head ${h + 1}`;
    const item = document.createElement('li');
    item.className = `series-head ${headClass(h)}`;
    item.dataset.testid = 'curve-legend-head';
    item.innerHTML = '<span class="swatch" aria-hidden="true"></span>';
    const {rowSteps} = curveSteps(curve);
    item.append(`P(${name} differs from the trunk\u2019s): ${describeHalfStep(head, rowSteps.at(-1) ?? 0)}`);
    return item;
  });
  legend.prepend(...heads);
  return legend;
}
