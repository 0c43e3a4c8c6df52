/**
 * Metrics exposition: what every role's `/metrics` serves (admin-server.ts).
 *
 * Components keep their counters as plain fields and implement `MetricSource`; the registry reads them
 * only when `/metrics` is scraped, so counting on the hot path costs one increment. Each metric's type,
 * labels and HELP text are in metric-catalog.ts; a name missing there is served with a type guessed from
 * its name (`_total`: a counter) and no HELP, which the catalog's test does not let pass.
 *
 *   const registry = new MetricsRegistry();
 *   registry.add({ collect: (out) => out.push(['nfstate_stamper_packets_total', {}, stamper.stamped]) });
 *   registry.render();   // the Prometheus text
 */
import { METRICS, type MetricType } from './metric-catalog.js';
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

    // family -> series key (name and labels) -> summed sample
    const families = new Map<string, Map<string, Series>>();
    for (const [rawName, labels, value] of samples) {
      const name = sanitizeName(rawName);
      const family = familyOf(name);
      let series = families.get(family);
      if (series === undefined) {
        series = new Map();
        families.set(family, series);
      }
      const key = name + renderLabels(labels);
      const known = series.get(key);
      if (known === undefined) series.set(key, { name, labels, value });
      else known.value += value;
    }
    samples.length = 0;

    const lines: string[] = [];
    for (const family of [...families.keys()].sort()) {
      const info = METRICS[family];
      const type: MetricType = info?.type ?? (family.endsWith('_total') ? 'counter' : 'gauge');
      if (info !== undefined) lines.push(`# HELP ${family} ${escapeHelp(info.help)}`);
      lines.push(`# TYPE ${family} ${type}`);
      const series = [...families.get(family)!.values()];
      if (type === 'histogram') series.sort(histogramOrder);
      else series.sort((a, b) => compare(renderLabels(a.labels), renderLabels(b.labels)));
      for (const s of series) lines.push(`${s.name}${renderLabels(s.labels)} ${formatValue(s.value)}`);
    }
    return lines.length === 0 ? '' : lines.join('\n') + '\n';
  }
}

interface Series {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * A histogram with fixed bucket bounds, observed on the hot path without allocating and exposed as
 * Prometheus's `_bucket{le}`, `_sum` and `_count` series of `name` (a histogram in metric-catalog.ts).
 */
export class Histogram {
  private readonly counts: Float64Array;
  private sum = 0;
  private count = 0;

  constructor(
    readonly name: string,
    readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    const b = this.bounds;
    let lo = 0;
    let hi = b.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (value <= b[mid]!) hi = mid;
      else lo = mid + 1;
    }
    this.counts[lo]!++;
    this.sum += value;
    this.count++;
  }

  collect(out: MetricSample[], labels: Record<string, string> = {}): void {
    let cumulative = 0;
    for (let i = 0; i < this.bounds.length; i++) {
      cumulative += this.counts[i]!;
      out.push([`${this.name}_bucket`, { ...labels, le: String(this.bounds[i]) }, cumulative]);
    }
    out.push([`${this.name}_bucket`, { ...labels, le: '+Inf' }, this.count]);
    out.push([`${this.name}_sum`, labels, this.sum]);
    out.push([`${this.name}_count`, labels, this.count]);
  }
}

const HISTOGRAM_SUFFIX = /_(bucket|sum|count)$/;

/** The metric a sample belongs to: a histogram's `_bucket`, `_sum` and `_count` series are one metric. */
export function familyOf(name: string): string {
  if (METRICS[name] !== undefined) return name;
  const base = name.replace(HISTOGRAM_SUFFIX, '');
  return METRICS[base]?.type === 'histogram' ? base : name;
}

/** Per label set: buckets by bound, then the sum, then the count, as the text format expects. */
function histogramOrder(a: Series, b: Series): number {
  const { le: leA, ...restA } = a.labels;
  const { le: leB, ...restB } = b.labels;
  const byLabels = compare(renderLabels(restA), renderLabels(restB));
  if (byLabels !== 0) return byLabels;
  return part(a.name) - part(b.name) || bound(leA) - bound(leB);
}

function part(name: string): number {
  return name.endsWith('_bucket') ? 0 : name.endsWith('_sum') ? 1 : 2;
}

function bound(le: string | undefined): number {
  return le === undefined ? 0 : le === '+Inf' ? Infinity : Number(le);
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
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

/** HELP text escapes backslash and newline only. */
export function escapeHelp(text: string): string {
  return text.replace(/[\\\n]/g, (c) => (c === '\\' ? '\\\\' : '\\n'));
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
