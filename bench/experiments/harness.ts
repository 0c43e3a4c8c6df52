/**
 * What every experiment of `nfstate bench <experiment>` shares: the three scales it runs at, repeats of
 * each point with their median and spread, progress on the terminal, and the output folder — the raw
 * measurements (raw.csv, results.json) and the plots (SVG and PNG) — that docs/results.md is made from.
 *
 *   const result = await runExperiment(threads, { mode: 'paper', out: 'bench-out', repeats: 3, argv });
 *
 * An experiment measures points: each point is one run of a series (nfstate, or a baseline) at one value
 * of x, repeated `repeats` times. Ratios against a baseline are taken between figures of the same run.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, totalmem, release } from 'node:os';
import { join } from 'node:path';
import type { Plot, PlotPoint } from './plot.js';
import { writePlot } from './plot.js';

/**
 * `paper`: the thesis's parameters (4000 packets, 100 packets/s, batches of 30 unless the experiment
 * varies them); `max`: rates up to saturation and many more packets; `quick`: a small run (under 60 s).
 */
export const MODES = ['paper', 'max', 'quick'] as const;
export type Mode = (typeof MODES)[number];

/** The thesis's fixed parameters (its §5): packets per run, offered rate, batch size. */
export const PAPER = { packets: 4000, rate: 100, batch: 30 } as const;

export interface RunOptions {
  mode: Mode;
  /** The experiment's folder is created under it. */
  out: string;
  repeats: number;
  /** How the run was asked for, written into the results so that the report can show it. */
  command: string;
  /** `threads`: the thread counts to measure (default: the thesis's 1..5). */
  threads?: number[];
  /** Packets per run where the experiment sends the thesis's #pkt (default 4000 under `paper`). */
  packets?: number;
  progress: Progress;
}

/** One measurement: a run of `series` at `x`, with its figures. */
export interface Row {
  series: string;
  x: number;
  repeat: number;
  [metric: string]: number | string;
}

/** A figure the report sets beside what the thesis published, or beside a baseline of the same run. */
export interface Comparison {
  what: string;
  unit: string;
  /** The thesis's value, read off its plot (absent: a comparison with a baseline). */
  thesis?: number;
  /** The baseline's figure from the same run, and its name. */
  baseline?: { name: string; value: number };
  measured: number;
  /** measured / (thesis or baseline): how many times more. */
  ratio: number;
  /** Which of the two directions is better, for the reader. */
  better: 'higher' | 'lower';
  /** The x the figure was read at, where it is one point of a plot (an offered rate, say). */
  x?: number;
}

/** What the reader must know to read a headline figure right: the report prints it beside the figure. */
export interface Caveat {
  note: string;
  /** The figure shows nothing (the runs did not do what it names): the report withholds its ratio. */
  void?: boolean;
}

export interface Outcome {
  /** Fixed parameters of the run, as the report lists them. */
  params: Record<string, unknown>;
  rows: Row[];
  plots: { name: string; plot: Plot }[];
  comparisons: Comparison[];
  /** Anything the reader needs to read the figures right. */
  notes?: string[];
  /** The experiment's own figures in one object: what `--json` prints (absent: the whole result). */
  summary?: Record<string, unknown>;
}

export interface Experiment {
  name: string;
  title: string;
  /** What the thesis measured, in one sentence. */
  reproduces: string;
  /** What this machine lacks for it to run (root, say), or undefined when it can run. */
  needs?: () => string | undefined;
  /** Runs per point unless --repeats says otherwise (default 3; 1 with --quick). */
  repeats?: number;
  run(o: RunOptions): Promise<Outcome>;
  /**
   * Which run wrote a row: rows with the same key came from one run (default: its series, x and repeat).
   * The report counts runs by it.
   */
  runOf?: (row: Row) => string;
  /** What qualifies a headline figure of a result (undefined: nothing beyond the runs' own checks). */
  caveat?: (c: Comparison, r: ExperimentResult) => Caveat | undefined;
}

export interface Machine {
  cores: number;
  cpu: string;
  memory_gib: number;
  node: string;
  kernel: string;
}

export interface ExperimentResult extends Outcome {
  experiment: string;
  title: string;
  reproduces: string;
  mode: Mode;
  repeats: number;
  command: string;
  machine: Machine;
  started: string;
  seconds: number;
  /** Per plot, the files written beside results.json. */
  files: Record<string, string[]>;
}

export function machine(): Machine {
  const cpu = cpus();
  return {
    cores: cpu.length,
    cpu: cpu[0]?.model.trim() ?? 'unknown',
    memory_gib: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    kernel: release(),
  };
}

/** Runs `exp` and writes `<out>/<name>/`: results.json, raw.csv and each plot as SVG and PNG. */
export async function runExperiment(exp: Experiment, o: RunOptions): Promise<ExperimentResult> {
  const dir = join(o.out, exp.name);
  await mkdir(dir, { recursive: true });
  const started = new Date();
  const outcome = await exp.run(o);
  const files: Record<string, string[]> = {};
  for (const { name, plot } of outcome.plots) files[name] = await writePlot(dir, name, plot);
  const result: ExperimentResult = {
    experiment: exp.name,
    title: exp.title,
    reproduces: exp.reproduces,
    mode: o.mode,
    repeats: o.repeats,
    command: o.command,
    machine: machine(),
    started: started.toISOString(),
    seconds: Math.round((Date.now() - started.getTime()) / 1000),
    ...outcome,
    files,
  };
  await writeFile(join(dir, 'results.json'), JSON.stringify(result, null, 2) + '\n');
  await writeFile(join(dir, 'raw.csv'), csv(outcome.rows));
  return result;
}

/** The rows as CSV, one column per field that any row has. */
export function csv(rows: readonly Row[]): string {
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const cell = (v: number | string | undefined): string => {
    const s = v === undefined ? '' : String(v);
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [columns.join(','), ...rows.map((r) => columns.map((c) => cell(r[c])).join(','))].join('\n') + '\n';
}

export interface Point<P> {
  series: string;
  x: number;
  /** Says what the point is on the progress line. */
  label: string;
  params: P;
}

/**
 * Measures every point `repeats` times, round-robin (all points once, then all again), so that a slow
 * spell of a shared machine spreads over the points rather than falling on one. A run that fails is
 * recorded with its error and left out of the medians.
 */
export async function sweep<P>(
  o: RunOptions,
  points: readonly Point<P>[],
  measure: (p: P) => Promise<Record<string, number>>,
): Promise<Row[]> {
  const rows: Row[] = [];
  const total = points.length * o.repeats;
  let step = 0;
  for (let repeat = 1; repeat <= o.repeats; repeat++) {
    for (const p of points) {
      o.progress.step(++step, total, `${p.label} (${repeat}/${o.repeats})`);
      try {
        rows.push({ series: p.series, x: p.x, repeat, ...(await measure(p.params)) });
      } catch (err) {
        rows.push({ series: p.series, x: p.x, repeat, error: String(err) });
      }
    }
  }
  o.progress.done();
  return rows;
}

/** Per series and x: the median of `metric` over the repeats, with the smallest and largest. */
export function summarise(rows: readonly Row[], metric: string, scale = 1): PlotPoint[] {
  const groups = new Map<string, { series: string; x: number; values: number[] }>();
  for (const r of rows) {
    const v = r[metric];
    if (typeof v !== 'number' || !Number.isFinite(v)) continue;
    const key = `${r.series}\u0000${r.x}`;
    let g = groups.get(key);
    if (g === undefined) groups.set(key, (g = { series: r.series, x: r.x, values: [] }));
    g.values.push(v * scale);
  }
  return [...groups.values()].map(({ series, x, values }) => ({
    series,
    x,
    median: median(values),
    min: Math.min(...values),
    max: Math.max(...values),
  }));
}

export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** The median of `series` at `x` among `points` (NaN when it was not measured). */
export function at(points: readonly PlotPoint[], series: string, x: number): number {
  return points.find((p) => p.series === series && p.x === x)?.median ?? NaN;
}

/** The thesis's values as a series of their own, drawn beside the measured ones. */
export function thesisSeries(values: readonly (readonly [number, number])[], name = 'thesis'): PlotPoint[] {
  return values.map(([x, v]) => ({ series: name, x, median: v, min: v, max: v }));
}

export function compare(
  what: string,
  unit: string,
  measured: number,
  against: { thesis: number } | { baseline: { name: string; value: number } },
  better: 'higher' | 'lower',
  x?: number,
): Comparison {
  const reference = 'thesis' in against ? against.thesis : against.baseline.value;
  return {
    what,
    unit,
    ...against,
    measured,
    ratio: measured / reference,
    better,
    ...(x === undefined ? {} : { x }),
  };
}

/** The caveats that apply, as one (void where any of them is). */
export function caveats(...cs: (Caveat | undefined)[]): Caveat | undefined {
  const some = cs.filter((c): c is Caveat => c !== undefined);
  if (some.length === 0) return undefined;
  return { note: some.map((c) => c.note).join('; '), ...(some.some((c) => c.void) ? { void: true } : {}) };
}

/** A figure set beside the thesis's from runs shorter than its 4000 packets (`--packets`). */
export function fewerPackets(c: Comparison, r: ExperimentResult): Caveat | undefined {
  const n = r.params.packets;
  return c.thesis !== undefined && typeof n === 'number' && n < PAPER.packets
    ? { note: `runs of ${n} packets, the thesis’s of ${PAPER.packets}` }
    : undefined;
}

/**
 * A throughput figure read at a fixed offered rate: nothing can forward more than it is offered, so where
 * the figure reaches the offered rate it is a floor, not a capacity, and a ratio against a baseline that
 * also reaches it says nothing.
 */
export function offeredRateCap(c: Comparison, pps: number, bytesPerPacket: number): Caveat | undefined {
  if (!(pps > 0) || !/^throughput/.test(c.what)) return undefined;
  const offered = c.unit === 'bytes/s' ? pps * bytesPerPacket : pps;
  // Within 2 % of the offered rate: what a run that forwards everything measures over its whole length.
  const capped = (v: number): boolean => v >= 0.98 * offered;
  const rate = `${pps} packets/s offered`;
  if (!capped(c.measured)) return undefined;
  if (c.baseline !== undefined && capped(c.baseline.value))
    return { note: `both capped by the ${rate}: the ratio shows no difference in capacity` };
  return {
    note: `capped by the ${rate}, all of which nfstate forwarded: the ratio is a floor, nfstate's capacity is not measured here`,
  };
}

/**
 * Progress on stderr: a bar redrawn in place on a terminal, one line per step otherwise (a log, CI), so
 * that a long run shows where it is either way.
 */
export class Progress {
  private readonly started = Date.now();
  private last = '';

  constructor(
    private readonly name: string,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {}

  step(n: number, total: number, what: string): void {
    const elapsed = Math.round((Date.now() - this.started) / 1000);
    if (!this.stream.isTTY) {
      this.stream.write(`${this.name} [${n}/${total}] ${what} (${elapsed} s)\n`);
      return;
    }
    const width = 24;
    const filled = Math.round(((n - 1) / total) * width);
    const line = `${this.name} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${n}/${total} ${what} ${elapsed} s`;
    this.stream.write(`\r${line.padEnd(this.last.length)}`);
    this.last = line;
  }

  done(): void {
    if (this.stream.isTTY && this.last !== '') this.stream.write('\n');
    this.last = '';
  }
}
