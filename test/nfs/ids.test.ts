import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { TcpFlag } from '../../src/packet/build.js';
import { AhoCorasick } from '../../src/nfs/aho-corasick.js';
import { createIds, defaultSignatures, IDS_BYTES, IDS_PORTS, type IdsState } from '../../src/nfs/ids.js';
import { flowKeyString } from '../../src/packet/flow-key.js';
import { ByteReader } from '../../src/state/bytes.js';
import { LocalGlobalState } from '../../src/state/global-local.js';
import { NfsError } from '../../src/errors.js';
import { Verdict } from '../../src/types.js';
import {
  decodeFull,
  Driver,
  encodeFull,
  ip,
  tcp,
  udp,
  writer,
  expectConfigError,
} from '../../src/testing/driver.js';

function setup(config: Record<string, unknown> = {}) {
  const global = new LocalGlobalState();
  const nf = createIds(config, global);
  return { global, nf, d: new Driver<IdsState>(nf, global) };
}

function naiveMatches(patterns: Uint8Array[], text: Uint8Array): [number, number][] {
  const out: [number, number][] = [];
  for (let end = 1; end <= text.length; end++) {
    patterns.forEach((p, i) => {
      if (p.length > end) return;
      for (let j = 0; j < p.length; j++) if (text[end - p.length + j] !== p[j]) return;
      out.push([i, end]);
    });
  }
  return out;
}

test(
  'aho-corasick finds exactly what a naive search finds, in one piece or in fragments',
  { timeout: 60_000 },
  () => {
    const byte = fc.integer({ min: 97, max: 100 }); // a small alphabet, so patterns overlap a lot
    fc.assert(
      fc.property(
        fc.array(
          fc.uint8Array({ minLength: 1, maxLength: 5 }).map((a) => a.map((b) => 97 + (b % 4))),
          {
            minLength: 1,
            maxLength: 8,
          },
        ),
        fc.array(byte, { maxLength: 80 }),
        fc.array(fc.nat(80), { maxLength: 4 }),
        (patterns, textArr, cuts) => {
          const text = Uint8Array.from(textArr);
          const ac = new AhoCorasick(patterns);
          const want = naiveMatches(patterns, text);
          const got: [number, number][] = [];
          const sink = { onMatch: (p: number, end: number) => got.push([p, end]) };
          // Scanning in fragments, carrying the node, must equal scanning at once.
          const points = [...new Set([0, ...cuts.map((c) => Math.min(c, text.length)), text.length])].sort(
            (a, b) => a - b,
          );
          let node = AhoCorasick.ROOT;
          for (let i = 0; i + 1 < points.length; i++)
            node = ac.scan(text, points[i]!, points[i + 1]!, node, sink);
          const key = ([p, e]: [number, number]) => e * 100 + p;
          assert.deepEqual(
            got.map(key).sort((a, b) => a - b),
            want.map(key).sort((a, b) => a - b),
          );
        },
      ),
      { interruptAfterTimeLimit: 1000, numRuns: 300 },
    );
  },
);

test('signatures are reported with flow and seq; all packets are forwarded', { timeout: 60_000 }, () => {
  const { d } = setup();
  const r = d.send(tcp('10.0.0.1', 4444, '192.0.2.1', 80, TcpFlag.ACK, 'GET /../../etc/passwd HTTP/1.0'));
  assert.equal(r.verdict, Verdict.FORWARD);
  const sigs = r.events.filter((e) => e.type === 'signature');
  assert.deepEqual(sigs.map((e) => e.id).sort(), [1001, 1002]);
  assert.equal(sigs[0]!.flow, flowKeyString(r.flow.key));
  assert.equal(sigs[0]!.seq, 1);
  assert.equal(r.state.hitTotal, 2);
  assert.equal(r.state.rec[3], 2, 'the packet record counts its matches');
  // A signature repeated within one packet is one hit.
  const again = d.send(tcp('10.0.0.1', 4444, '192.0.2.1', 80, TcpFlag.ACK, 'cmd.exe cmd.exe'));
  assert.deepEqual(
    again.events.map((e) => e.id),
    [1003],
  );
  assert.equal(again.state.hitTotal, 3);
});

test(
  'a signature split across two packets of one direction is found, even with the other direction between',
  { timeout: 60_000 },
  () => {
    const { d } = setup({
      signatures: [
        { id: 7, name: 'sqli', pattern: 'SELECT * FROM' },
        { id: 8, name: 'nop', hex: '9090' },
      ],
    });
    assert.equal(d.send(udp('10.0.0.1', 5000, '192.0.2.1', 3306, 'x SELECT *')).events.length, 0);
    assert.equal(d.send(udp('192.0.2.1', 3306, '10.0.0.1', 5000, 'SELECT noise')).events.length, 0);
    const r = d.send(udp('10.0.0.1', 5000, '192.0.2.1', 3306, ' FROM users'));
    assert.deepEqual(
      r.events.map((e) => [e.type, e.id, e.seq]),
      [['signature', 7, 3]],
    );
    const bin = d.send(udp('10.0.0.1', 5000, '192.0.2.1', 3306, Uint8Array.of(1, 0x90, 0x90, 2)));
    assert.deepEqual(
      bin.events.map((e) => e.id),
      [8],
    );
  },
);

test('port scan and heavy hitter are each reported once, across flows', { timeout: 60_000 }, () => {
  const { d, global } = setup({ scanPorts: 5, heavyBytes: 1000 });
  const events = [];
  for (let port = 1; port <= 8; port++)
    events.push(...d.send(tcp('192.0.2.66', 999, '10.0.0.1', port, TcpFlag.SYN)).events);
  assert.deepEqual(events, [{ type: 'portscan', src: '192.0.2.66', ports: 5 }]);
  assert.equal(global.sets(IDS_PORTS).size(ip('192.0.2.66')), 8);
  const heavy = [];
  for (let i = 0; i < 10; i++)
    heavy.push(...d.send(udp('10.0.0.9', 1, '192.0.2.1', 2, new Uint8Array(200))).events);
  assert.equal(heavy.length, 1);
  assert.equal(heavy[0]!.type, 'heavy-hitter');
  assert.equal(heavy[0]!.src, '10.0.0.9');
  assert.ok(Number(heavy[0]!.bytes) >= 1000);
  assert.equal(global.counters(IDS_BYTES).get(ip('10.0.0.9')), 10 * 228);
});

test(
  'the log keeps the newest logLimit records; a delta carries only what was appended',
  { timeout: 60_000 },
  () => {
    const { d, nf } = setup({ logLimit: 10, signatures: [{ id: 1, name: 'x', pattern: 'xx' }] });
    let st: IdsState | undefined;
    const mark = (s: IdsState) => nf.codec.mark(s);
    for (let i = 0; i < 25; i++)
      st = d.send(udp('10.0.0.1', 1, '192.0.2.1', 2, i % 3 === 0 ? 'xx' : 'y')).state;
    const s = st!;
    assert.equal(s.recTotal, 25);
    assert.equal(s.rec.length, 10 * 4);
    assert.equal(s.hitTotal, 9);
    const full = decodeFull(nf, encodeFull(nf, s));
    assert.deepEqual(full, s);
    // The oldest kept record is #15 (seq 16).
    assert.equal(full.rec[(15 % 10) * 4], 16);

    const at = mark(s);
    const base = encodeFull(nf, s);
    for (let i = 0; i < 3; i++) d.send(udp('10.0.0.1', 1, '192.0.2.1', 2, 'xx'));
    const w = writer();
    nf.codec.encodeDelta(s, at, w);
    const delta = w.view().slice();
    assert.ok(delta.length < base.length / 2, `delta ${delta.length} bytes vs full ${base.length}`);
    const replica = decodeFull(nf, base);
    nf.codec.applyDelta(replica, new ByteReader(delta));
    assert.deepEqual(replica, s);
    // A delta cut at another mark does not apply.
    assert.throws(() => {
      nf.codec.applyDelta(replica, new ByteReader(delta));
    }, NfsError);
    assert.deepEqual(replica, s, 'unchanged by the refused delta');
  },
);

test('config is validated field by field', { timeout: 60_000 }, () => {
  const g = new LocalGlobalState();
  const bad = (config: Record<string, unknown>, field: string) => {
    expectConfigError(() => createIds(config, g), field);
  };
  bad({ signatures: {} }, 'signatures');
  bad({ signatures: [{ name: 'a', pattern: 'a' }] }, 'signatures[0].id');
  bad({ signatures: [{ id: 1, pattern: 'a' }] }, 'signatures[0].name');
  bad({ signatures: [{ id: 1, name: 'a' }] }, 'signatures[0]');
  bad({ signatures: [{ id: 1, name: 'a', pattern: '' }] }, 'signatures[0].pattern');
  bad({ signatures: [{ id: 1, name: 'a', hex: 'abc' }] }, 'signatures[0].hex');
  bad({ signatures: [{ id: 1, name: 'a', hex: 'zz' }] }, 'signatures[0].hex');
  bad({ signatures: [{ id: 1, name: 'a', pattern: 'a', hex: '61' }] }, 'signatures[0]');
  bad(
    {
      signatures: [
        { id: 1, name: 'a', pattern: 'a' },
        { id: 1, name: 'b', pattern: 'b' },
      ],
    },
    'signatures[1].id',
  );
  bad({ scanPorts: 0 }, 'scanPorts');
  bad({ heavyBytes: -1 }, 'heavyBytes');
  bad({ logLimit: 0 }, 'logLimit');
  const ids = createIds({}, g);
  assert.equal(ids.config.signatures, defaultSignatures);
  assert.ok(defaultSignatures.length >= 10);
  assert.equal(ids.config.logLimit, 4096);
});
