import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { Comparison, ExperimentResult, Row } from '../../bench/experiments/harness.js';
import { compare } from '../../bench/experiments/harness.js';
import { EXPERIMENTS, experiment } from '../../bench/experiments/index.js';
import { renderReport, runsLine, tallyRuns } from '../../bench/experiments/report.js';
import { nfstate } from '../helpers/cli.js';

const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/**
 * Each experiment from the command line, as a fresh clone runs it: `--quick` must produce its files, and
 * they must parse. Their values are the benches' business, not the tests'. Each run is stopped after
 * 300 s; the suite's limit, which node:test also gives each test, is above the sum of those.
 */
describe('nfstate bench <experiment> --quick', { timeout: 3_600_000 }, () => {
  const out = mkdtempSync(join(tmpdir(), 'nfstate-bench-'));
  const results: ExperimentResult[] = [];
  after(() => {
    rmSync(out, { recursive: true, force: true });
  });

  for (const exp of EXPERIMENTS) {
    it(`${exp.name}: writes results.json, raw.csv and every plot as SVG and PNG`, async () => {
      // How long a quick run takes is the machine's business: only one that hangs is stopped.
      const r = await nfstate(['bench', exp.name, '--quick', '--out', out], 300_000);
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      // Not a TTY: one progress line per step.
      assert.match(r.stderr, new RegExp(`^${exp.name} \\[1/\\d+\\] `, 'm'));
      const dir = join(out, exp.name);
      const result = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as ExperimentResult;
      assert.equal(result.experiment, exp.name);
      assert.equal(result.mode, 'quick');
      assert.ok(result.rows.length > 0);
      assert.ok(
        result.rows.every((row) => row.error === undefined),
        JSON.stringify(result.rows),
      );
      const csv = readFileSync(join(dir, 'raw.csv'), 'utf8').trimEnd().split('\n');
      assert.equal(csv.length, result.rows.length + 1, 'a header, then one line per run');
      assert.ok(result.plots.length > 0);
      for (const { name } of result.plots) {
        const svg = readFileSync(join(dir, `${name}.svg`), 'utf8');
        assert.match(svg, /^<svg[^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
        assert.match(svg, /<\/svg>\s*$/);
        assert.ok(
          readFileSync(join(dir, `${name}.png`))
            .subarray(0, 8)
            .equals(PNG),
          `${name}.png`,
        );
      }
      assert.deepEqual(
        readdirSync(dir).sort(),
        [
          'raw.csv',
          'results.json',
          ...result.plots.flatMap((p) => [`${p.name}.png`, `${p.name}.svg`]),
        ].sort(),
      );
      results.push(result);
    });
  }

  it('the report names every experiment, links each plot, and gives the command that reruns it', () => {
    const md = renderReport(results, 'results');
    for (const r of results) {
      assert.ok(md.includes(`## ${r.title}`));
      assert.ok(md.includes(`nfstate bench ${r.experiment} --quick`));
      for (const p of r.plots) assert.ok(md.includes(`(results/${r.experiment}/${p.name}.png)`));
    }
  });
});

/** A result as `bench <name>` writes it, with only the rows and figures a test cares about. */
function result(name: string, rows: Row[], comparisons: Comparison[] = [], params = {}): ExperimentResult {
  return {
    experiment: name,
    title: `title of ${name}`,
    reproduces: '',
    mode: 'paper',
    repeats: 3,
    command: `nfstate bench ${name}`,
    machine: { cores: 2, cpu: 'cpu', memory_gib: 1, node: 'v20', kernel: '6' },
    started: '2020-01-01T00:00:00.000Z',
    seconds: 1,
    files: {},
    params,
    rows,
    plots: [],
    comparisons,
  };
}

const runsOf = (md: string): string[] => md.split('\n').filter((l) => l.startsWith('Runs: '));
/** The headline table's row for `what`, split into its cells. */
function headline(md: string, what: string): string[] {
  const line = md.split('\n').find((l) => l.startsWith(`| ${what} |`));
  assert.ok(line !== undefined, `no headline row ${what} in\n${md}`);
  return line.split(' | ').map((c) => c.replace(/^\| |\s*\|$/g, ''));
}

describe('the runs line of the report', () => {
  const clean = { lost: 0, reordered: 0, state_ok: 1 };

  it('counts runs, not rows: one run of migration-bytes writes a row per batch and per move', () => {
    const rows: Row[] = [1, 2].flatMap((repeat) =>
      [31, 60, 68, 69].map((x) => ({
        series: 'sent to own cluster (per batch)',
        x,
        repeat,
        bytes: 91,
        clean: 1,
      })),
    );
    const t = tallyRuns(rows, experiment('migration-bytes')!.runOf);
    assert.equal(t.runs, 2);
    assert.equal(t.unclean, 0);
    assert.deepEqual(runsOf(renderReport([result('migration-bytes', rows)], 'results', EXPERIMENTS)), [
      "Runs: 2; failed: 0; unclean: 0. Every run that finished was checked for lost packets, for reordered packets and against the oracle's state.",
    ]);
  });

  it('a run that reordered packets is unclean, once however many of its rows say so', () => {
    const rows: Row[] = [
      { series: 'nfstate', x: 25, repeat: 1, ...clean },
      { series: 'nfstate', x: 50, repeat: 1, ...clean, reordered: 3 },
      { series: 'nfstate', x: 50, repeat: 1, ...clean, reordered: 1 },
      { series: 'nfstate', x: 60, repeat: 1, ...clean, duplicated: 2 },
    ];
    const t = tallyRuns(rows);
    assert.equal(t.runs, 3);
    assert.equal(t.unclean, 2);
    assert.deepEqual(t.uncleanBySeries, { nfstate: 2 });
    assert.equal(t.checked.duplicates, 1);
    assert.match(runsLine(t), /^Runs: 3; failed: 0; unclean: 2 \(nfstate: 2\)\./);
  });

  it('a run whose rows carry no loss, order or oracle column is not checked, never clean', () => {
    const rows: Row[] = [
      { series: 'nfstate', x: 1000, repeat: 1, throughput_pps: 100, lost: 0 },
      { series: 'relay', x: 1000, repeat: 1, throughput_pps: 120 },
      { series: 'relay', x: 1000, repeat: 2, error: 'did not start' },
    ];
    const t = tallyRuns(rows);
    assert.deepEqual(
      { runs: t.runs, failed: t.failed, unclean: t.unclean, unchecked: t.unchecked },
      { runs: 3, failed: 1, unclean: 0, unchecked: 1 },
    );
    assert.deepEqual(t.checked, { loss: 1, order: 0, duplicates: 0, oracle: 0, stream: 0 });
    assert.equal(
      runsLine(t),
      "Runs: 3; failed: 1; unclean: 0. Checked for lost packets: 1 of 2 runs; for reordered packets: none; against the oracle's state: none (not checked against the oracle). Not checked at all: 1 (relay: 1).",
    );
  });

  it('the report counts a scale run without a check as not checked, and says so beside its headline figure', () => {
    const rows: Row[] = [
      { series: 'nfstate', x: 1000, repeat: 1, throughput_pps: 100, lost: 0 },
      { series: 'Node relay (baseline)', x: 1000, repeat: 1, throughput_pps: 120 },
    ];
    const figure = compare(
      'throughput with 1000 flows',
      'packets/s',
      100,
      { baseline: { name: 'relay', value: 120 } },
      'higher',
    );
    const md = renderReport([result('scale', rows, [figure])], 'results', EXPERIMENTS);
    assert.match(
      runsOf(md)[0]!,
      /^Runs: 2; failed: 0; unclean: 0\. .*Not checked at all: 1 \(Node relay \(baseline\): 1\)\.$/,
    );
    assert.match(headline(md, 'scale: throughput with 1000 flows')[4]!, /not checked against the oracle$/);
  });
});

describe('caveats in the headline table', () => {
  const lbRows = (moves: number): Row[] =>
    [1, 2, 3].flatMap((repeat) => [
      {
        series: 'nfstate, load balancing',
        x: 25,
        repeat,
        latency_ms_mean: 1,
        lost: 0,
        reordered: 0,
        state_ok: 1,
        lb_moves: moves,
      },
      {
        series: 'nfstate, no load balancing',
        x: 25,
        repeat,
        latency_ms_mean: 1,
        lost: 0,
        reordered: 0,
        state_ok: 1,
        lb_moves: 0,
      },
    ]);
  const lbFigure = compare(
    'latency at 25 packets/s',
    'ms/packet',
    1,
    { baseline: { name: 'no load balancing', value: 1 } },
    'lower',
    25,
  );

  it('an lb figure from runs where the unit moved no flow shows no result, and says why', () => {
    const md = renderReport([result('lb', lbRows(0), [lbFigure])], 'results', EXPERIMENTS);
    const [, , , ratio, caveat] = headline(md, 'lb: latency at 25 packets/s');
    assert.equal(ratio, 'no result');
    assert.match(caveat!, /moved no flow/);
  });

  it('an lb figure says how many flows the unit moved', () => {
    const md = renderReport([result('lb', lbRows(4), [lbFigure])], 'results', EXPERIMENTS);
    const [, , , ratio, caveat] = headline(md, 'lb: latency at 25 packets/s');
    assert.match(ratio!, /x (better|worse)/);
    assert.match(caveat!, /^the unit moved 4 flows per run;/);
  });

  it('a throughput at a fixed offered rate is marked capped; bytes against the thesis are marked as other state models', () => {
    const rows: Row[] = [{ series: 'nfstate', x: 1, repeat: 1, lost: 0, reordered: 0, state_ok: 1 }];
    const md = renderReport(
      [
        result(
          'threads',
          rows,
          [compare('throughput, 1 thread(s)', 'bytes/s', 4400, { thesis: 420 }, 'higher')],
          {
            rate_pps: 100,
          },
        ),
        result(
          'batch',
          rows,
          [
            compare(
              'throughput at batch 30',
              'bytes/s',
              4400,
              { baseline: { name: 'no-cluster', value: 4400 } },
              'higher',
            ),
            compare(
              'replication traffic at batch 30',
              'bytes/s',
              8000,
              { baseline: { name: 'no-cluster', value: 48000 } },
              'lower',
            ),
          ],
          { rate_pps: 100 },
        ),
        result(
          'migration-bytes',
          [{ ...rows[0]!, clean: 1 }],
          [compare('state sent per batch', 'bytes', 91, { thesis: 3000 }, 'lower')],
        ),
      ],
      'results',
      EXPERIMENTS,
    );
    assert.match(
      headline(md, 'threads: throughput, 1 thread(s)')[4]!,
      /^capped by the 100 packets\/s offered/,
    );
    assert.match(
      headline(md, 'batch: throughput at batch 30')[4]!,
      /^both capped by the 100 packets\/s offered/,
    );
    assert.equal(headline(md, 'batch: replication traffic at batch 30')[4], '');
    assert.match(headline(md, 'migration-bytes: state sent per batch')[4]!, /^different state models/);
  });
});
