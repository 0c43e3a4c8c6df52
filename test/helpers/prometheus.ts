/**
 * Checking a `/metrics` text as Prometheus would: `promtool check metrics` (the format and its lint), and
 * against nfstate's catalog (metric-catalog.ts): every series a metric of it, with only the labels it lists.
 */
import { spawnSync } from 'node:child_process';
import { METRICS } from '../../src/metric-catalog.js';
import { familyOf } from '../../src/metrics.js';

/** `promtool check metrics` on `text`: its exit status and what it said. */
export function promtool(text: string): { status: number | null; output: string } {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

/** One line per series of `text` that the catalog does not describe; none when all is well. */
export function catalogProblems(text: string): string[] {
  const problems: string[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const name = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line)![0];
    const info = METRICS[familyOf(name)];
    if (info === undefined) {
      problems.push(`${name}: not in the catalog`);
      continue;
    }
    const allowed = new Set(info.labels);
    if (info.type === 'histogram' && name.endsWith('_bucket')) allowed.add('le');
    const labels = /\{(.*)\}/.exec(line)?.[1] ?? '';
    for (const [, label] of labels.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"/g))
      if (!allowed.has(label!)) problems.push(`${name}: label ${label} is not in the catalog`);
  }
  return problems;
}
