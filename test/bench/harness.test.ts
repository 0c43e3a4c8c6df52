import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import type { Row } from '../../bench/experiments/harness.js';
import { Progress, compare, csv, median, summarise } from '../../bench/experiments/harness.js';

describe('experiment harness', { timeout: 60_000 }, () => {
  const rows: Row[] = [
    { series: 'nfstate', x: 10, repeat: 1, pps: 300 },
    { series: 'nfstate', x: 10, repeat: 2, pps: 100 },
    { series: 'nfstate', x: 10, repeat: 3, pps: 200 },
    { series: 'no-cluster', x: 10, repeat: 1, pps: 50 },
    { series: 'no-cluster', x: 10, repeat: 2, error: 'instance did not start' },
  ];

  it('summarises each series and x as the median of its repeats, with the smallest and largest; failed runs are left out', () => {
    assert.deepEqual(summarise(rows, 'pps'), [
      { series: 'nfstate', x: 10, median: 200, min: 100, max: 300 },
      { series: 'no-cluster', x: 10, median: 50, min: 50, max: 50 },
    ]);
    assert.equal(median([4, 1, 3, 2]), 2.5);
  });

  it('writes every field of every row as CSV, quoting what needs it', () => {
    assert.equal(
      csv([...rows.slice(3), { series: 'a, "b"', x: 1, repeat: 1 }]),
      'series,x,repeat,pps,error\n' +
        'no-cluster,10,1,50,\n' +
        'no-cluster,10,2,,instance did not start\n' +
        '"a, ""b""",1,1,,\n',
    );
  });

  it('takes ratios against the thesis or a baseline of the same run', () => {
    const c = compare('latency', 'ms', 0.5, { thesis: 50 }, 'lower');
    assert.equal(c.ratio, 0.01);
    assert.equal(c.thesis, 50);
    assert.equal(
      compare('pps', 'packets/s', 300, { baseline: { name: 'x', value: 100 } }, 'higher').ratio,
      3,
    );
  });

  it('prints one progress line per step when not on a terminal', () => {
    let text = '';
    const stream = new Writable({
      write(chunk: Buffer, _enc, done) {
        text += chunk.toString();
        done();
      },
    }) as unknown as NodeJS.WriteStream;
    const p = new Progress('batch', stream);
    p.step(1, 2, 'batch 10');
    p.step(2, 2, 'batch 100');
    p.done();
    assert.match(text, /^batch \[1\/2\] batch 10 \(\d+ s\)\nbatch \[2\/2\] batch 100 \(\d+ s\)\n$/);
  });
});
