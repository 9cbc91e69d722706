/**
 * A few hand-written SVG plots (bench/results.svg, the prune output's sparsity-profile.svg): log/linear line panels, 100%-stacked bars and plain bars,
 * laid out in a grid. No dependencies; every panel is a <g> translated into its cell.
 */

export const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const fmt = (v: number) => {
  const a = Math.abs(v);
  if (a === 0) return '0';
  if (a >= 1e4 || a < 1e-3) return v.toExponential(0).replace('e+', 'e');
  if (a >= 100) return v.toFixed(0);
  if (a >= 1) return String(Number(v.toPrecision(3)));
  return String(Number(v.toPrecision(2)));
};

export interface Panel {
  width: number;
  height: number;
  /** SVG content in local coordinates [0, width] × [0, height] */
  body: string;
}

export interface Series {
  name: string;
  points: [number, number][];
  color?: string;
  dash?: boolean;
}

interface Axis {
  log: boolean;
  min: number;
  max: number;
}

function axisOf(values: number[], log: boolean, zero = false): Axis {
  const v = values.filter((x) => Number.isFinite(x) && (!log || x > 0));
  if (v.length === 0) return { log, min: log ? 1 : 0, max: log ? 10 : 1 };
  let min = Math.min(...v), max = Math.max(...v);
  if (log) {
    min = 10 ** (Math.floor(Math.log10(Math.min(...v)) * 2) / 2);
    max = 10 ** (Math.ceil(Math.log10(Math.max(...v)) * 2) / 2);
    if (max <= min) max = min * 10;
  } else {
    if (zero) min = Math.min(0, min);
    if (max === min) max = min + 1;
    const pad = (max - min) * 0.05;
    max += pad;
    if (!zero) min -= pad;
  }
  return { log, min, max };
}

function ticks(a: Axis): number[] {
  if (a.log) {
    const out: number[] = [];
    const lo = Math.floor(Math.log10(a.min)), hi = Math.ceil(Math.log10(a.max));
    const decades = hi - lo;
    const mults = decades <= 2 ? [1, 2, 5] : decades <= 4 ? [1, 3] : [1];
    for (let e = lo; e <= hi; e++) for (const m of mults) {
      const v = m * 10 ** e;
      if (v >= a.min * 0.999 && v <= a.max * 1.001) out.push(v);
    }
    return out;
  }
  const span = a.max - a.min;
  const step0 = 10 ** Math.floor(Math.log10(span / 5));
  const step = [1, 2, 5, 10].map((m) => m * step0).find((s) => span / s <= 6)!;
  const out: number[] = [];
  for (let v = Math.ceil(a.min / step) * step; v <= a.max + 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function project(a: Axis, v: number, lo: number, hi: number): number {
  const t = a.log ? (Math.log10(v) - Math.log10(a.min)) / (Math.log10(a.max) - Math.log10(a.min)) : (v - a.min) / (a.max - a.min);
  return lo + t * (hi - lo);
}

/** A line plot; with `xCategories`, x values are indices into it (evenly spaced, labelled). */
export function linePanel(o: {
  title: string; xlabel: string; ylabel: string; series: Series[]; xlog?: boolean; ylog?: boolean;
  width?: number; height?: number; xCategories?: string[]; yZero?: boolean; xTicks?: number[];
}): Panel {
  const W = o.width ?? 560, H = o.height ?? 340;
  const L = 64, R = 175, T = 34, B = 46;
  const series = o.series.filter((s) => s.points.length > 0);
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const cat = o.xCategories;
  const xa: Axis = cat ? { log: false, min: -0.3, max: cat.length - 0.7 } : axisOf(xs, !!o.xlog);
  if (!cat && o.xlog && xs.length) {
    xa.min = Math.min(...xs) / 1.15;
    xa.max = Math.max(...xs) * 1.15;
  }
  const ya = axisOf(ys, !!o.ylog, o.yZero);
  const px = (v: number) => project(xa, v, L, W - R), py = (v: number) => project(ya, v, H - B, T);
  const parts: string[] = [];
  parts.push(`<text x="${L}" y="20" font-size="14" font-weight="bold">${esc(o.title)}</text>`);
  parts.push(`<rect x="${L}" y="${T}" width="${W - R - L}" height="${H - B - T}" fill="none" stroke="#999"/>`);
  for (const t of ticks(ya)) {
    const y = py(t).toFixed(1);
    parts.push(`<line x1="${L}" x2="${W - R}" y1="${y}" y2="${y}" stroke="#e5e5e5"/><text x="${L - 5}" y="${y}" font-size="10" text-anchor="end" dominant-baseline="middle">${fmt(t)}</text>`);
  }
  const xt = cat ? cat.map((_, i) => i) : o.xTicks ?? (o.xlog ? [...new Set(xs)].sort((a, b) => a - b) : ticks(xa));
  for (const t of xt) {
    const x = px(t).toFixed(1);
    parts.push(`<line x1="${x}" x2="${x}" y1="${T}" y2="${H - B}" stroke="#eee"/><text x="${x}" y="${H - B + 14}" font-size="10" text-anchor="middle">${esc(cat ? cat[t]! : fmt(t))}</text>`);
  }
  parts.push(`<text x="${(L + W - R) / 2}" y="${H - 10}" font-size="11" text-anchor="middle">${esc(o.xlabel)}</text>`);
  parts.push(`<text x="14" y="${(T + H - B) / 2}" font-size="11" text-anchor="middle" transform="rotate(-90 14 ${(T + H - B) / 2})">${esc(o.ylabel)}</text>`);
  series.forEach((s, k) => {
    const color = s.color ?? PALETTE[k % PALETTE.length]!;
    const pts = s.points.filter((p) => (!o.ylog || p[1] > 0) && (!o.xlog || p[0] > 0)).sort((a, b) => a[0] - b[0]);
    const d = pts.map((p, i) => `${i ? 'L' : 'M'}${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(' ');
    parts.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2"${s.dash ? ' stroke-dasharray="6 4"' : ''}/>`);
    for (const p of pts) parts.push(`<circle cx="${px(p[0]).toFixed(1)}" cy="${py(p[1]).toFixed(1)}" r="3" fill="${color}"/>`);
    const ly = T + 8 + k * 16;
    parts.push(`<line x1="${W - R + 10}" x2="${W - R + 30}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="2"${s.dash ? ' stroke-dasharray="6 4"' : ''}/><text x="${W - R + 34}" y="${ly}" font-size="10" dominant-baseline="middle">${esc(s.name)}</text>`);
  });
  return { width: W, height: H, body: parts.join('\n') };
}

/** Horizontal 100%-stacked bars (shares of a total), each labelled with its total. */
export function stackedBarPanel(o: {
  title: string; partNames: string[]; rows: { label: string; parts: number[]; note: string }[]; width?: number; colors?: string[];
}): Panel {
  const W = o.width ?? 560, L = 170, R = 70, T = 52, rowH = 15;
  const H = T + o.rows.length * rowH + 16;
  const colors = o.colors ?? PALETTE;
  const parts: string[] = [`<text x="8" y="20" font-size="14" font-weight="bold">${esc(o.title)}</text>`];
  let lx = 8;
  o.partNames.forEach((n, k) => {
    parts.push(`<rect x="${lx}" y="30" width="10" height="10" fill="${colors[k % colors.length]}"/><text x="${lx + 13}" y="39" font-size="10">${esc(n)}</text>`);
    lx += 18 + n.length * 6;
  });
  o.rows.forEach((r, i) => {
    const y = T + i * rowH;
    const total = r.parts.reduce((a, b) => a + Math.max(0, b), 0) || 1;
    parts.push(`<text x="${L - 5}" y="${y + rowH / 2}" font-size="10" text-anchor="end" dominant-baseline="middle">${esc(r.label)}</text>`);
    let x = L;
    r.parts.forEach((v, k) => {
      const w = (Math.max(0, v) / total) * (W - L - R);
      if (w > 0) parts.push(`<rect x="${x.toFixed(1)}" y="${y + 1}" width="${w.toFixed(1)}" height="${rowH - 2}" fill="${colors[k % colors.length]}"><title>${esc(`${r.label} ${o.partNames[k]}: ${fmt(v)}`)}</title></rect>`);
      x += w;
    });
    parts.push(`<text x="${W - R + 4}" y="${y + rowH / 2}" font-size="10" dominant-baseline="middle">${esc(r.note)}</text>`);
  });
  return { width: W, height: H, body: parts.join('\n') };
}

/** Horizontal bars of one value each (linear scale from 0). */
export function barPanel(o: { title: string; unit: string; rows: { label: string; value: number; color?: string }[]; width?: number }): Panel {
  const W = o.width ?? 560, L = 230, R = 60, T = 34, rowH = 17;
  const H = T + o.rows.length * rowH + 20;
  const max = Math.max(1e-9, ...o.rows.map((r) => r.value));
  const parts: string[] = [`<text x="8" y="20" font-size="14" font-weight="bold">${esc(o.title)}</text>`];
  o.rows.forEach((r, i) => {
    const y = T + i * rowH;
    const w = (r.value / max) * (W - L - R);
    parts.push(`<text x="${L - 5}" y="${y + rowH / 2}" font-size="10" text-anchor="end" dominant-baseline="middle">${esc(r.label)}</text>`);
    parts.push(`<rect x="${L}" y="${y + 2}" width="${w.toFixed(1)}" height="${rowH - 4}" fill="${r.color ?? PALETTE[0]}"/>`);
    parts.push(`<text x="${(L + w + 4).toFixed(1)}" y="${y + rowH / 2}" font-size="10" dominant-baseline="middle">${fmt(r.value)} ${esc(o.unit)}</text>`);
  });
  return { width: W, height: H, body: parts.join('\n') };
}

/** Panels in rows of `columns`, with a heading. */
export function layout(title: string, subtitle: string, panels: Panel[], columns = 2): string {
  const gap = 16, top = 54;
  const colW = Math.max(...panels.map((p) => p.width));
  const rows: Panel[][] = [];
  for (let i = 0; i < panels.length; i += columns) rows.push(panels.slice(i, i + columns));
  let y = top;
  const groups: string[] = [];
  for (const row of rows) {
    row.forEach((p, c) => groups.push(`<g transform="translate(${gap + c * (colW + gap)},${y})"><rect width="${p.width}" height="${p.height}" fill="#fff" stroke="#ddd"/>\n${p.body}\n</g>`));
    y += Math.max(...row.map((p) => p.height)) + gap;
  }
  const W = gap + columns * (colW + gap);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" font-family="DejaVu Sans, Arial, sans-serif">`,
    `<rect width="${W}" height="${y}" fill="#fafafa"/>`,
    `<text x="${gap}" y="24" font-size="18" font-weight="bold">${esc(title)}</text>`,
    `<text x="${gap}" y="42" font-size="11" fill="#555">${esc(subtitle)}</text>`,
    ...groups,
    '</svg>',
    '',
  ].join('\n');
}
