// Divergence by row as an inline SVG line chart: "when did the model
// decide?" Branches that leave the trunk early differ a lot (high
// divergence); once the picture is settled, late branches barely differ.
//
//   container.replaceChildren(divergencePlot(grid.rows, grid.plan.sampler.steps));

const SVG = 'http://www.w3.org/2000/svg';
const SERIES = [
  {key: 'divergence', label: 'between branches', className: 'series-pairwise'},
  {key: 'divergence_to_trunk', label: 'branches to trunk', className: 'series-trunk'},
];

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

export function divergencePlot(rows, steps) {
  const width = 360, height = 190;
  const left = 44, right = 12, top = 12, bottom = 40;
  const plotW = width - left - right, plotH = height - top - bottom;
  const lastStep = Math.max(steps || 0, ...rows.map((row) => row.branch_step ?? 0), 1);
  const {max: yMax, ticks} = niceAxis(Math.max(...rows.flatMap((row) => SERIES.map((s) => row[s.key] ?? 0))));
  const x = (step) => left + (step / lastStep) * plotW;
  const y = (value) => top + plotH - (value / yMax) * plotH;

  const svg = el('svg', {
    viewBox: `0 0 ${width} ${height}`,
    role: 'img',
    'aria-label': 'Divergence of the branches by the step at which they leave the trunk',
    class: 'plot',
  });
  svg.append(el('title', {}, 'Divergence by branch step'));

  // Axes, grid lines and ticks.
  const axes = el('g', {class: 'axes'});
  for (let i = 0; i <= ticks; i++) {
    const value = (yMax * i) / ticks;
    axes.append(el('line', {x1: left, x2: width - right, y1: y(value), y2: y(value), class: i ? 'gridline' : 'axis'}));
    axes.append(el('text', {x: left - 6, y: y(value) + 3.5, 'text-anchor': 'end'}, String(Number(value.toFixed(4)))));
  }
  let lastLabelX = -Infinity;
  for (const row of rows) {
    const step = row.branch_step ?? 0;
    axes.append(el('line', {x1: x(step), x2: x(step), y1: top + plotH, y2: top + plotH + 4, class: 'axis'}));
    if (x(step) - lastLabelX >= 16) {
      axes.append(el('text', {x: x(step), y: top + plotH + 15, 'text-anchor': 'middle'}, String(step)));
      lastLabelX = x(step);
    }
  }
  axes.append(el('text', {x: left + plotW / 2, y: height - 6, 'text-anchor': 'middle', class: 'axis-title'},
      'branch step (branches leave the trunk after it)'));
  svg.append(axes);

  for (const series of SERIES) {
    const group = el('g', {class: series.className, 'data-series': series.key});
    const points = rows.map((row) => [x(row.branch_step ?? 0), y(row[series.key] ?? 0)]);
    group.append(el('polyline', {points: points.map((p) => p.join(',')).join(' '), fill: 'none'}));
    rows.forEach((row, i) => {
      const dot = el('circle', {cx: points[i][0], cy: points[i][1], r: 3.5});
      dot.append(el('title', {}, `step ${row.branch_step ?? 0} (t=${row.timestep ?? 0}): ` +
          `${(row[series.key] ?? 0).toFixed(3)} ${series.label}`));
      group.append(dot);
    });
    svg.append(group);
  }
  return svg;
}

export function plotLegend() {
  const legend = document.createElement('ul');
  legend.className = 'legend';
  for (const series of SERIES) {
    const item = document.createElement('li');
    item.className = series.className;
    item.innerHTML = '<span class="swatch" aria-hidden="true"></span>';
    item.append(`mean RMS distance ${series.label}`);
    legend.append(item);
  }
  return legend;
}
