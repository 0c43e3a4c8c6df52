import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { ExperimentResult } from '../../bench/experiments/harness.js';
import { EXPERIMENTS } from '../../bench/experiments/index.js';
import { renderReport } from '../../bench/experiments/report.js';
import { nfstate } from '../helpers/cli.js';

const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/**
 * Each experiment from the command line, as a fresh clone runs it: `--quick` must produce its files, and
 * they must parse. Their values are the benches' business, not the tests'.
 */
describe('nfstate bench <experiment> --quick', () => {
  const out = mkdtempSync(join(tmpdir(), 'nfstate-bench-'));
  const results: ExperimentResult[] = [];
  after(() => {
    rmSync(out, { recursive: true, force: true });
  });

  for (const exp of EXPERIMENTS) {
    it(`${exp.name}: writes results.json, raw.csv and every plot as SVG and PNG, in under 60 s`, async () => {
      const started = Date.now();
      const r = await nfstate(['bench', exp.name, '--quick', '--out', out], 90_000);
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      const seconds = (Date.now() - started) / 1000;
      assert.ok(seconds < 60, `took ${seconds} s`);
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
