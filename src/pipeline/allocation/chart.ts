// sparsity-profile.svg in the output folder: the measured sparsity of every pruned linear, per block and role, with
// the run's target (the allocation's profile shows as the spread of the lines around it).
import { writeFileSync } from 'node:fs';
import { layout, linePanel, PALETTE, type Series } from '../../report/svg.js';
import type { LinearReport } from '../prune-block.js';

export interface ChartInput {
  model: string;
  method: string;
  sparsity: { target: number; overall: number };
  layers: LinearReport[];
  allocation?: { method: string };
}

export function sparsityChartSvg(r: ChartInput): string {
  const blocks = [...new Set(r.layers.map((l) => l.block))].sort((a, b) => a - b);
  const roles = [...new Set(r.layers.map((l) => l.role))];
  const series: Series[] = roles.map((role, k) => ({
    name: role,
    color: PALETTE[k % PALETTE.length],
    points: r.layers.filter((l) => l.role === role).map((l) => [blocks.indexOf(l.block), l.sparsity * 100] as [number, number]),
  }));
  series.push({ name: `target ${(r.sparsity.target * 100).toFixed(1)}%`, color: '#000', dash: true, points: blocks.map((_, i) => [i, r.sparsity.target * 100]) });
  const panel = linePanel({
    title: 'sparsity per block and role', xlabel: 'block', ylabel: 'zeros (%)', series, xCategories: blocks.map(String), width: 760, height: 380,
  });
  const allocation = r.allocation?.method ?? 'uniform';
  return layout(`${r.method}, allocation ${allocation}`, `${r.model}: ${(r.sparsity.overall * 100).toFixed(2)}% zeros over all pruned linears (target ${(r.sparsity.target * 100).toFixed(2)}%)`, [panel], 1);
}

export function writeSparsityChart(path: string, r: ChartInput): void {
  if (r.layers.length === 0) return;
  writeFileSync(path, sparsityChartSvg(r));
}
