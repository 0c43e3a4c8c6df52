import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { nfstate } from '../helpers/cli.js';
import { repoPath } from '../helpers/paths.js';

const dir = mkdtempSync(join(tmpdir(), 'nfstate-cli-'));

function yaml(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/**
 * One clear line on stderr with its error code, the exit code (2: used wrongly; 1: it ran and failed), and
 * nothing printed as if it had run.
 */
async function rejects(args: string[], pattern: RegExp, exit = 2): Promise<void> {
  const r = await nfstate(args, 20_000);
  assert.equal(r.code, exit, `expected exit ${exit}: ${args.join(' ')}\n${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one error line, got:\n${r.stderr}`);
  assert.match(lines[0]!, /^nfstate: NFS_ERR_[A-Z]+: /);
  assert.match(lines[0]!, pattern);
  assert.equal(r.stdout, '');
}

describe('nfstate command line', { timeout: 300_000 }, () => {
  it('rejects bad demo flags with one line naming the flag', async () => {
    await rejects(['demo', '--clusters', 'three'], /--clusters/);
    await rejects(['demo', '--threads', '0'], /--threads/);
    await rejects(['demo', '--nf', 'router'], /router/);
    await rejects(['demo', '--rate', '-5'], /--rate/);
    await rejects(['demo', '--bogus'], /unknown option/);
  });

  it('rejects a bad topology file with one line naming the field', async () => {
    await rejects(['up', '-c', yaml('typo.yaml', 'nf: { type: nat }\nclustrs: 3\n')], /clustrs.*clusters/);
    await rejects(['up', '-c', yaml('type.yaml', 'nf: { type: nat }\nperCluster: many\n')], /perCluster/);
    await rejects(['up', '-c', yaml('nf.yaml', 'nf: { type: router }\n')], /nf\.type/);
    await rejects(['up', '-c', yaml('syntax.yaml', 'nf: [type: nat\n')], /syntax\.yaml:\d+/);
    await rejects(['up', '-c', join(dir, 'missing.yaml')], /missing\.yaml/);
  });

  it('rejects a bad NF config before starting anything', async () => {
    await rejects(
      ['up', '-c', yaml('lb.yaml', 'nf: { type: lb, config: { backends: [] } }\n')],
      /nf\.config\.backends/,
    );
    await rejects(
      ['demo', '-c', yaml('nat.yaml', 'nf: { type: nat, config: { portFirst: 99999 } }\n')],
      /portFirst/,
    );
  });

  it('scale add: rejects bad flags, a key file it cannot use, and names a controller it cannot reach', async () => {
    const key = ['--key-file', yaml('operator.key', 'ab'.repeat(32))];
    await rejects(['scale', 'add', '--controller', 'nohost', ...key], /--controller/);
    await rejects(['scale', 'add', '--controller', '127.0.0.1:9', '--count', '0', ...key], /--count/);
    await rejects(
      ['scale', 'add', '--controller', '127.0.0.1:1', ...key],
      /no answer from 127\.0\.0\.1:1/,
      1,
    );
    await rejects(
      ['scale', 'add', '--controller', '127.0.0.1:1', '--key-file', join(dir, 'none.key')],
      /--key-file: cannot read/,
    );
    await rejects(
      ['scale', 'add', '--controller', '127.0.0.1:1', '--key-file', yaml('short.key', 'abcd')],
      /--key-file: .* must hold at least 16 bytes of hex/,
    );
  });

  it('a mistyped command exits 2 with its code and a suggestion; --json puts the error on stdout too', async () => {
    await rejects(['demoo'], /NFS_ERR_USAGE: unknown command 'demoo' \(Did you mean demo\?\)/);
    const r = await nfstate(['demo', '--packets', 'abc', '--json']);
    assert.equal(r.code, 2);
    assert.deepEqual(JSON.parse(r.stdout), {
      error: {
        code: 'NFS_ERR_USAGE',
        message:
          "option '--packets <n>' argument 'abc' is invalid. --packets must be an integer in 1..10000000",
        retriable: false,
      },
    });
    assert.match(r.stderr, /^nfstate: NFS_ERR_USAGE: option '--packets <n>'/);
    const none = await nfstate([]);
    assert.equal(none.code, 2, 'no command: usage on stderr');
    assert.match(none.stderr, /^Usage: nfstate/);
  });

  it("demo -c FILE takes --nf over the file, with the file's config only for the same type", async () => {
    const file = yaml(
      'own.yaml',
      'nf: { type: nat, config: { portFirst: 2000 } }\nclusters: 1\nperCluster: 2\nthreads: 1\n',
    );
    const small = ['--flows', '4', '--packets', '5', '--json'];
    const asked = await nfstate(['demo', '-c', file, '--nf', 'firewall', ...small], 120_000);
    assert.equal(asked.code, 0, asked.stderr);
    const s = JSON.parse(asked.stdout) as { nf: string; lost: number; state_matches_oracle: boolean };
    assert.equal(s.nf, 'firewall');
    assert.equal(s.lost, 0);
    assert.equal(s.state_matches_oracle, true);
    // Given, even as the default, --nf conflicts with --chain.
    await rejects(['demo', '-c', file, '--nf', 'nat', '--chain', 'firewall,nat'], /--nf and --chain/);
  });

  it("prints its version, the package's", async () => {
    const r = await nfstate(['--version']);
    assert.equal(r.code, 0, r.stderr);
    const pkg = JSON.parse(readFileSync(repoPath('package.json'), 'utf8')) as { version: string };
    assert.equal(r.stdout, `${pkg.version}\n`);
  });

  it('prints usage for help', async () => {
    const r = await nfstate(['--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /demo/);
  });
});
