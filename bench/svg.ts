// A small dependency-free SVG line chart for the benches' --plot output.

export interface Series {
  name: string;
  points: [number, number][]; // (x, y); y may be NaN for "no result" (skipped in the line)
  dashed?: boolean;
}

export interface Chart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  xTicks?: number[]; // default: every x present
  xFormat?: (x: number) => string;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

export function lineChart(c: Chart): string {
  const W = 680, H = 420, L = 70, R = 200, T = 40, B = 50;
  const pw = W - L - R, ph = H - T - B;
  const ys = c.series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
  const xs = [...new Set(c.series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
  const ticks = c.xTicks ?? xs;
  const maxY = Math.max(1e-9, ...ys);
  const step = niceStep(maxY / 5);
  const yTop = Math.ceil(maxY / step) * step;
  const lo = Math.min(...ticks, ...xs), hi = Math.max(...ticks, ...xs);
  const x = (v: number) => L + (hi > lo ? ((v - lo) / (hi - lo)) * pw : pw / 2);
  const y = (v: number) => T + ph - (v / yTop) * ph;
  const fx = c.xFormat ?? ((v: number) => String(v));
  const colors = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${(L + pw / 2).toFixed(0)}" y="20" text-anchor="middle" font-size="14">${esc(c.title)}</text>`);
  const digits = step < 1 ? Math.ceil(-Math.log10(step)) : 0;
  for (let v = 0; v <= yTop + step / 2; v += step) {
    out.push(`<line x1="${L}" x2="${L + pw}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#ddd"/>`);
    out.push(`<text x="${L - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${v.toFixed(digits)}</text>`);
  }
  for (const t of ticks) out.push(`<text x="${x(t).toFixed(1)}" y="${T + ph + 18}" text-anchor="middle">${esc(fx(t))}</text>`);
  out.push(`<line x1="${L}" x2="${L}" y1="${T}" y2="${T + ph}" stroke="black"/><line x1="${L}" x2="${L + pw}" y1="${T + ph}" y2="${T + ph}" stroke="black"/>`);
  out.push(`<text x="${L + pw / 2}" y="${H - 10}" text-anchor="middle">${esc(c.xLabel)}</text>`);
  out.push(`<text transform="translate(18 ${T + ph / 2}) rotate(-90)" text-anchor="middle">${esc(c.yLabel)}</text>`);
  c.series.forEach((s, i) => {
    const color = colors[i % colors.length]!;
    const pts = s.points.filter((p) => Number.isFinite(p[1]));
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    if (pts.length > 1) out.push(`<polyline fill="none" stroke="${color}" stroke-width="2"${dash} points="${pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ')}"/>`);
    for (const p of pts) out.push(`<circle cx="${x(p[0]).toFixed(1)}" cy="${y(p[1]).toFixed(1)}" r="3" fill="${color}"/>`);
    const ly = T + 10 + i * 18;
    out.push(`<line x1="${L + pw + 15}" x2="${L + pw + 35}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="2"${dash}/>`);
    out.push(`<text x="${L + pw + 40}" y="${ly + 4}">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

export interface Bars {
  title: string;
  yLabel: string;
  groups: { name: string; parts: number[] }[]; // one stacked bar per group
  partNames: string[];
}

/** Stacked bars (e.g. ms per token split into I/O, memory management and compute per setting). */
export function stackedBars(c: Bars): string {
  const W = 720, H = 420, L = 70, R = 150, T = 40, B = 70;
  const pw = W - L - R, ph = H - T - B;
  const maxY = Math.max(1e-9, ...c.groups.map((g) => g.parts.reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0)));
  const step = niceStep(maxY / 5);
  const yTop = Math.ceil(maxY / step) * step;
  const y = (v: number) => T + ph - (v / yTop) * ph;
  const colors = ['#d62728', '#ff7f0e', '#1f77b4', '#2ca02c', '#9467bd'];
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${(L + pw / 2).toFixed(0)}" y="20" text-anchor="middle" font-size="14">${esc(c.title)}</text>`);
  for (let v = 0; v <= yTop + step / 2; v += step) {
    out.push(`<line x1="${L}" x2="${L + pw}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#ddd"/>`);
    out.push(`<text x="${L - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${v}</text>`);
  }
  const bw = pw / Math.max(1, c.groups.length);
  c.groups.forEach((g, i) => {
    let acc = 0;
    const x = L + i * bw + bw * 0.15;
    g.parts.forEach((v, j) => {
      if (!(v > 0)) return;
      out.push(`<rect x="${x.toFixed(1)}" y="${y(acc + v).toFixed(1)}" width="${(bw * 0.7).toFixed(1)}" height="${(y(acc) - y(acc + v)).toFixed(1)}" fill="${colors[j % colors.length]}"/>`);
      acc += v;
    });
    out.push(`<text x="${(x + bw * 0.35).toFixed(1)}" y="${(y(acc) - 4).toFixed(1)}" text-anchor="middle">${acc.toFixed(0)}</text>`);
    out.push(`<text x="${(x + bw * 0.35).toFixed(1)}" y="${T + ph + 16}" text-anchor="middle">${esc(g.name)}</text>`);
  });
  out.push(`<line x1="${L}" x2="${L}" y1="${T}" y2="${T + ph}" stroke="black"/><line x1="${L}" x2="${L + pw}" y1="${T + ph}" y2="${T + ph}" stroke="black"/>`);
  out.push(`<text transform="translate(18 ${T + ph / 2}) rotate(-90)" text-anchor="middle">${esc(c.yLabel)}</text>`);
  c.partNames.forEach((n, j) => {
    const ly = T + 10 + j * 18;
    out.push(`<rect x="${L + pw + 15}" y="${ly - 8}" width="14" height="10" fill="${colors[j % colors.length]}"/>`);
    out.push(`<text x="${L + pw + 35}" y="${ly + 1}">${esc(n)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
