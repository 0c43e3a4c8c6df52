/** `nfstate bench`: the thesis's experiments and nfstate's own benchmarks, each loaded when asked for. */
import { InvalidArgumentError, type Command } from 'commander';
import { int } from './args.js';

/** A comma-separated list of integers >= 1. */
function intList(name: string) {
  const one = int(name, 1);
  return (v: string): number[] => v.split(',').map((x) => one(x));
}

export function addBenchCommand(program: Command): void {
  program
    .command('bench')
    .description('benchmarks; each reports ratios against a baseline measured in the same run')
    .argument(
      '<experiment>',
      'threads | batch | rate | migration-bytes | lb | failover | scale | baselines | tcp-failover (root: kernel TCP in the lab) | switch (root: the built-in switch against Open vSwitch) | all (the experiments, written as CSV, JSON and plots; all writes the report too), report (the report again, from results already written), or dataplane | memory | global | replication',
    )
    .option('--quick', 'a short run (under 60 s)', false)
    .option('--paper', "experiments: the thesis's parameters (the default)", false)
    .option('--max', 'experiments: rates up to saturation, many more packets', false)
    .option(
      '--repeats <n>',
      'experiments: runs per point (default 3; 1 with --quick)',
      int('--repeats', 1, 100),
    )
    .option('--out <dir>', 'experiments: output folder (bench all: the report goes beside it, as <dir>.md)')
    .option(
      '--threads <list>',
      'threads: thread counts, comma-separated (default 1,2,3,4,5)',
      intList('--threads'),
    )
    .option(
      '--packets <n>',
      "experiments: packets per run where the thesis's 4000 apply; memory: packets per flow (default 3)",
      int('--packets', 1),
    )
    .option('--flows <n>', 'memory: concurrent flows', int('--flows', 1), 100_000)
    .option('--writers <n>', 'global: concurrent writers', int('--writers', 1, 256), 8)
    .option('--batch <n>', 'global: updates per submit', int('--batch', 1, 128), 100)
    .option('--rounds <n>', 'replication: rounds per burst size', int('--rounds', 1, 100_000), 500)
    .option('--json', 'print one JSON object', false)
    .action(
      async (
        experiment: string,
        o: {
          quick: boolean;
          paper: boolean;
          max: boolean;
          repeats?: number;
          out?: string;
          threads?: number[];
          json: boolean;
          flows: number;
          packets?: number;
          writers: number;
          batch: number;
          rounds: number;
        },
      ) => {
        const out = (line: string): void => {
          process.stdout.write(line + '\n');
        };
        // Loaded on demand: role processes start often and never need the benches.
        const {
          EXPERIMENTS,
          experiment: find,
          runBench,
          runAll,
          writeReport,
        } = await import('../../bench/experiments/index.js');
        const exp = find(experiment);
        if (experiment === 'report') {
          out(`report: ${await writeReport(o.out ?? 'docs/results')}`);
        } else if (exp !== undefined || experiment === 'all') {
          if ([o.quick, o.paper, o.max].filter(Boolean).length > 1)
            throw new InvalidArgumentError('--paper, --max and --quick: pick one');
          const options = {
            mode: o.quick ? ('quick' as const) : o.max ? ('max' as const) : ('paper' as const),
            out: o.out ?? (experiment === 'all' ? 'docs/results' : 'bench-results'),
            command: ['nfstate', ...process.argv.slice(2)].join(' '),
            ...(o.repeats === undefined ? {} : { repeats: o.repeats }),
            ...(o.threads === undefined ? {} : { threads: o.threads }),
            ...(o.packets === undefined ? {} : { packets: o.packets }),
          };
          if (exp === undefined) {
            const report = await runAll(options);
            out(`report: ${report}`);
          } else {
            const r = await runBench(exp, options);
            out(
              o.json
                ? JSON.stringify(r.summary ?? r)
                : `${exp.name}: ${r.seconds} s, written to ${options.out}/${exp.name}/`,
            );
          }
        } else if (experiment === 'dataplane') {
          const { runDataplaneBench } = await import('../../bench/dataplane.js');
          await runDataplaneBench({ quick: o.quick, json: o.json, out });
        } else if (experiment === 'memory') {
          const { runMemoryBench } = await import('../../bench/memory.js');
          runMemoryBench({
            flows: o.quick ? Math.min(o.flows, 20_000) : o.flows,
            packets: o.packets ?? 3,
            json: o.json,
            out,
          });
        } else if (experiment === 'global') {
          const { runGlobalBench } = await import('../../bench/global.js');
          await runGlobalBench({
            writers: o.writers,
            batch: o.batch,
            seconds: o.quick ? 2 : 5,
            json: o.json,
            out,
          });
        } else if (experiment === 'replication') {
          const { runReplicationBench } = await import('../../bench/replication.js');
          await runReplicationBench({
            rounds: o.quick ? Math.min(o.rounds, 100) : o.rounds,
            json: o.json,
            out,
          });
        } else {
          throw new InvalidArgumentError(
            `unknown experiment '${experiment}' (expected ${[...EXPERIMENTS.map((e) => e.name), 'all', 'report', 'dataplane', 'memory', 'global', 'replication'].join(', ')})`,
          );
        }
      },
    );
}
