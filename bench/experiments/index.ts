/**
 * `nfstate bench <experiment>`: the thesis's experiments and nfstate's own, each beside its baselines
 * (harness.ts), and `bench all`, which runs them one after another and writes the report (report.ts).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import type { Experiment, ExperimentResult, Mode } from './harness.js';
import { Progress, runExperiment } from './harness.js';
import { baselines } from './baselines.js';
import { batch, rate } from './clustering.js';
import { failover } from './failover.js';
import { lb } from './lb.js';
import { migration } from './migration.js';
import { renderReport } from './report.js';
import { scale } from './scale.js';
import { switchBackends } from './switch.js';
import { tcpFailover } from './tcp-failover.js';
import { threads } from './threads.js';

export const EXPERIMENTS: readonly Experiment[] = [
  threads,
  batch,
  rate,
  migration,
  lb,
  failover,
  scale,
  baselines,
  tcpFailover,
  switchBackends,
];

export interface BenchOptions {
  mode: Mode;
  out: string;
  repeats?: number;
  threads?: number[];
  packets?: number;
  command: string;
}

export function experiment(name: string): Experiment | undefined {
  return EXPERIMENTS.find((e) => e.name === name);
}

export async function runBench(exp: Experiment, o: BenchOptions): Promise<ExperimentResult> {
  return runExperiment(exp, {
    mode: o.mode,
    out: o.out,
    repeats: o.repeats ?? (o.mode === 'quick' ? 1 : (exp.repeats ?? 3)),
    command: o.command,
    ...(o.threads === undefined ? {} : { threads: o.threads }),
    ...(o.packets === undefined ? {} : { packets: o.packets }),
    progress: new Progress(exp.name),
  });
}

/**
 * Runs every experiment this machine can run into `o.out` and writes the report beside it (`<out>.md`);
 * returns its path. One it cannot run (tcp-failover without root) is said on stderr and keeps the results
 * it had.
 */
export async function runAll(o: BenchOptions): Promise<string> {
  for (const exp of EXPERIMENTS) {
    const lacking = exp.needs?.();
    if (lacking === undefined) await runBench(exp, o);
    else process.stderr.write(`${exp.name}: skipped, it needs ${lacking}\n`);
  }
  return writeReport(o.out);
}

/**
 * Writes the report `<dir>.md` from the results in `dir` (`<dir>/<experiment>/results.json`): after
 * `bench all`, or after one experiment was run again into the same folder. Returns its path.
 */
export async function writeReport(dir: string): Promise<string> {
  const results: ExperimentResult[] = [];
  for (const exp of EXPERIMENTS) {
    const text = await readFile(join(dir, exp.name, 'results.json'), 'utf8').catch(() => undefined);
    if (text !== undefined) results.push(JSON.parse(text) as ExperimentResult);
  }
  const path = `${dir}.md`;
  await writeFile(path, renderReport(results, relative(dirname(path), dir), EXPERIMENTS));
  return path;
}
