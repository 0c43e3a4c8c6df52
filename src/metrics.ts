/**
 * Metrics exposition: what every role's `/metrics` serves (admin-server.ts).
 *
 * Components keep their counters as plain fields and implement `MetricSource`; the registry reads them
 * only when `/metrics` is scraped, so counting on the hot path costs one increment. Names follow
 * `nfstate_<subsystem>_<thing>_total` for counters; anything else is exposed as a gauge.
 *
 *   const registry = new MetricsRegistry();
 *   registry.add({ collect: (out) => out.push(['nfstate_switch_packets_total', { dir: 'in' }, sw.packetsIn]) });
 *   registry.render();   // the Prometheus text
 */
import type { MetricSample, MetricSource } from './types.js';

/** Prometheus text exposition format version served by `/metrics`. */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/**
 * Collects samples from many sources and renders them as one exposition. Samples with the same name and
 * labels (for example one counter per worker, reported under the same labels) are summed, because the
 * format forbids duplicate series and a sum is what a scraper would compute anyway.
 */
export class MetricsRegistry implements MetricSource {
  private readonly sources = new Set<MetricSource>();
  // Reused across scrapes; a scrape is rare next to packets, but there is no reason to churn.
  private readonly scratch: MetricSample[] = [];
  private collectErrors = 0;

  add(source: MetricSource): void {
    this.sources.add(source);
  }

  remove(source: MetricSource): void {
    this.sources.delete(source);
  }

  /** Makes the registry itself a source, so registries can nest (a process registry holding a role's). */
  collect(out: MetricSample[]): void {
    for (const source of this.sources) {
      const before = out.length;
      try {
        source.collect(out);
      } catch {
        // One broken source must not blank the whole scrape; its partial output is discarded and the
        // failure is itself a metric.
        out.length = before;
        this.collectErrors++;
      }
    }
    out.push(['nfstate_metrics_collect_errors_total', {}, this.collectErrors]);
  }

  render(): string {
    const samples = this.scratch;
    samples.length = 0;
    this.collect(samples);

    const byName = new Map<string, Map<string, number>>();
    for (const [rawName, labels, value] of samples) {
      const name = sanitizeName(rawName);
      let series = byName.get(name);
      if (series === undefined) {
        series = new Map();
        byName.set(name, series);
      }
      const key = renderLabels(labels);
      series.set(key, (series.get(key) ?? 0) + value);
    }
    samples.length = 0;

    const lines: string[] = [];
    for (const name of [...byName.keys()].sort()) {
      const series = byName.get(name)!;
      lines.push(`# TYPE ${name} ${name.endsWith('_total') ? 'counter' : 'gauge'}`);
      for (const key of [...series.keys()].sort()) {
        lines.push(`${name}${key} ${formatValue(series.get(key)!)}`);
      }
    }
    return lines.length === 0 ? '' : lines.join('\n') + '\n';
  }
}

function sanitizeName(name: string): string {
  if (NAME_RE.test(name)) return name;
  const fixed = name.replace(/[^a-zA-Z0-9_:]/g, '_');
  return /^[0-9]/.test(fixed) ? '_' + fixed : fixed;
}

function sanitizeLabel(name: string): string {
  if (LABEL_RE.test(name)) return name;
  const fixed = name.replace(/[^a-zA-Z0-9_]/g, '_');
  return /^[0-9]/.test(fixed) ? '_' + fixed : fixed;
}

/** `{a="1",b="x\"y"}` with label names sorted, or '' when there are none. */
function renderLabels(labels: Record<string, string>): string {
  const names = Object.keys(labels);
  if (names.length === 0) return '';
  names.sort();
  const parts: string[] = [];
  for (const name of names) parts.push(`${sanitizeLabel(name)}="${escapeLabelValue(String(labels[name]))}"`);
  return `{${parts.join(',')}}`;
}

/** The sum of a metric's series in a scrape of the text format, of those carrying `label` when given. */
export function metricSum(text: string, name: string, label = ''): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    const next = line[name.length];
    if (line.startsWith(name) && (next === ' ' || next === '{') && line.includes(label))
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/** Escapes a label value as the 0.0.4 text format requires: backslash, double quote and newline. */
export function escapeLabelValue(value: string): string {
  return value.replace(/[\\"\n]/g, (c) => (c === '\\' ? '\\\\' : c === '"' ? '\\"' : '\\n'));
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}
