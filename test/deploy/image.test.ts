/**
 * The container image's build, carried out stage by stage without a container runtime (there is none here):
 * each stage of deploy/Dockerfile gets a temporary folder standing for its filesystem, and its WORKDIR, ENV,
 * COPY (from the build context with .dockerignore applied, or from another stage) and RUN steps are done as
 * the file gives them, on this machine, which has what the base image and the build stage's apt-get provide
 * (Node 20, gcc, make, python3). Left out, by name: the RUNs that change the base image's own system (the
 * apt-get, the symlink in /usr/local/bin) and USER. Then the runtime stage's entry point runs a demo with
 * nothing but what that stage holds: its production dependencies, dist/ and the addon.
 *
 * npm runs with the local cache preferred (`npm ci` of the repository filled it), so the test needs the
 * registry only for a package the cache lacks.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix, relative } from 'node:path';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { DemoSummary } from '../../src/launcher/demo-report.js';
import { repoPath } from '../helpers/paths.js';

const run = promisify(execFile);

/**
 * RUN steps that change the base image's system: what the image gets from them this machine has, and here
 * they would change this machine (`npm cache clean` would empty its npm cache).
 */
const LEFT_OUT = [/^apt-get update\b/, /^ln -s \S+ \/usr\/local\/bin\//, /^npm cache clean\b/];

interface Step {
  op: string;
  args: string;
}

/** The instructions of a Dockerfile: continuation lines joined, comments and blank lines dropped. */
function instructions(text: string): Step[] {
  const out: Step[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (pending === '' && (line === '' || line.startsWith('#'))) continue;
    pending += (pending === '' ? '' : ' ') + line.replace(/\\$/, '').trim();
    if (line.endsWith('\\')) continue;
    const [op, ...rest] = pending.split(/\s+/);
    out.push({ op: op!.toUpperCase(), args: rest.join(' ') });
    pending = '';
  }
  return out;
}

/** Whether `.dockerignore` keeps `path` (relative to the context, `/`-separated) out of the context. */
function ignored(patterns: readonly string[], path: string): boolean {
  const parts = path.split('/');
  return patterns.some((p) => {
    const re = new RegExp(
      '^' +
        p
          .split('**/')
          .map((part) =>
            part
              .replace(/[.+^${}()|[\]\\]/g, '\\$&')
              .replace(/\*/g, '[^/]*')
              .replace(/\?/g, '[^/]'),
          )
          .join('(.*/)?') +
        '$',
    );
    // A pattern that names a folder keeps everything under it out.
    return parts.some((_, i) => re.test(parts.slice(0, i + 1).join('/')));
  });
}

/**
 * Builds `dockerfile` from the context `context` into `root` (a folder per stage); returns each stage's
 * folder and what the last stage runs (its ENTRYPOINT, its ENV and WORKDIR).
 */
async function buildStages(
  dockerfile: string,
  context: string,
  root: string,
): Promise<{
  stages: Map<string, string>;
  entry: { argv: string[]; env: Record<string, string>; cwd: string };
}> {
  const patterns = readFileSync(join(context, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  const stages = new Map<string, string>();
  let fs = '';
  let cwd = '/';
  let env: Record<string, string> = {};
  let argv: string[] = [];
  const inStage = (path: string): string => join(fs, posix.resolve(cwd, path));
  for (const { op, args } of instructions(readFileSync(dockerfile, 'utf8'))) {
    if (op === 'FROM') {
      const name = /\bAS\s+(\S+)/i.exec(args)?.[1] ?? String(stages.size);
      fs = join(root, name);
      mkdirSync(fs, { recursive: true });
      stages.set(name, fs);
      cwd = '/';
      env = {};
    } else if (op === 'WORKDIR') {
      cwd = posix.resolve(cwd, args);
      mkdirSync(inStage('.'), { recursive: true });
    } else if (op === 'ENV') {
      for (const [, k, v] of args.matchAll(/(\w+)=(\S+)/g)) env[k!] = v!;
    } else if (op === 'COPY') {
      const words = args.split(/\s+/);
      const from = words[0]!.startsWith('--from=') ? stages.get(words.shift()!.slice(7)) : undefined;
      const dest = words.pop()!;
      for (const src of words) {
        const target = dest.endsWith('/') ? join(inStage(dest), posix.basename(src)) : inStage(dest);
        if (from !== undefined) {
          const at = join(from, src);
          if (!existsSync(at)) throw new Error(`COPY --from: ${src} is not in that stage`);
          mkdirSync(dirname(target), { recursive: true });
          cpSync(at, target, { recursive: true });
          continue;
        }
        const rel = posix.normalize(src);
        if (ignored(patterns, rel) || !existsSync(join(context, rel)))
          throw new Error(`COPY ${src}: not in the build context`);
        mkdirSync(dirname(target), { recursive: true });
        cpSync(join(context, rel), target, {
          recursive: true,
          filter: (p) => !ignored(patterns, relative(context, p).split('\\').join('/')),
        });
      }
    } else if (op === 'RUN') {
      for (const command of args.split(/\s+&&\s+/)) {
        if (LEFT_OUT.some((re) => re.test(command))) continue;
        try {
          await run('sh', ['-c', command], {
            cwd: inStage('.'),
            env: {
              ...process.env,
              ...env,
              npm_config_prefer_offline: 'true',
              npm_config_audit: 'false',
              npm_config_fund: 'false',
            },
            maxBuffer: 64 * 1024 * 1024,
            timeout: 300_000,
          });
        } catch (err) {
          const e = err as { stderr?: string; message: string };
          throw new Error(
            `RUN ${command}: ${(e.stderr ?? e.message).trim().split('\n').slice(-5).join('\n')}`,
          );
        }
      }
    } else if (op === 'ENTRYPOINT') {
      argv = JSON.parse(args) as string[];
    }
  }
  return { stages, entry: { argv, env, cwd: inStage('.') } };
}

/** Every file under `dir`, relative to it. */
function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? files(p).map((f) => `${name}/${f}`) : [name];
  });
}

describe('the container image, built stage by stage', { timeout: 900_000 }, () => {
  const root = mkdtempSync(join(tmpdir(), 'nfstate-image-'));
  after(() => {
    rmSync(root, { recursive: true, force: true });
  });

  it('builds, and its runtime stage alone runs a demo that loses nothing', async () => {
    const { stages, entry } = await buildStages(repoPath('deploy/Dockerfile'), repoPath('.'), root);
    const runtime = stages.get('runtime')!;
    // Only what runs: no sources, no tests, no compiler's output beyond dist/src and dist/bench.
    const top = readdirSync(join(runtime, 'app')).sort();
    assert.deepEqual(top, ['dist', 'native', 'node_modules', 'package-lock.json', 'package.json']);
    assert.deepEqual(readdirSync(join(runtime, 'app/dist')).sort(), ['bench', 'src']);
    assert.ok(files(join(runtime, 'app/native')).includes('build/nfstate_udp.node'), 'the addon was built');
    assert.ok(!existsSync(join(runtime, 'app/node_modules/typescript')), 'no development dependency');
    // The entry point, with the stage's environment (NODE_ENV=production) and nothing from the repository.
    const [file, ...args] = entry.argv;
    const app = (p: string): string => (p.startsWith('/app/') ? join(runtime, p) : p);
    const { stdout: version } = await run(app(file === 'node' ? process.execPath : file!), [
      ...args.map(app),
      '--version',
    ]);
    assert.match(version, /^\d+\.\d+\.\d+/);
    const demo = await run(
      process.execPath,
      [
        ...args.map(app),
        ...['demo', '--json', '--nf', 'nat', '--clusters', '1', '--per-cluster', '2'],
        ...['--flows', '10', '--packets', '20', '--rate', '500', '--moves', '2'],
      ],
      { cwd: entry.cwd, env: { ...process.env, ...entry.env }, timeout: 120_000 },
    );
    const s = JSON.parse(demo.stdout) as DemoSummary;
    assert.equal(s.lost, 0);
    assert.equal(s.state_matches_oracle, true);
    assert.equal(s.io, 'native');
  });

  it('refuses a COPY of what .dockerignore keeps out, and names a RUN that fails', async () => {
    const context = mkdtempSync(join(root, 'context-'));
    cpSync(repoPath('.dockerignore'), join(context, '.dockerignore'));
    mkdirSync(join(context, 'dist'));
    const write = (text: string): string => {
      const f = join(context, 'Dockerfile');
      writeFileSync(f, text);
      return f;
    };
    await assert.rejects(
      buildStages(write('FROM node:20 AS build\nWORKDIR /src\nCOPY dist ./dist\n'), context, join(root, 'a')),
      /COPY dist: not in the build context/,
    );
    await assert.rejects(
      buildStages(
        write('FROM node:20 AS build\nWORKDIR /src\nRUN true \\\n  && false\n'),
        context,
        join(root, 'b'),
      ),
      /RUN false/,
    );
    assert.equal(ignored(['**/node_modules'], 'examples/x/node_modules/y'), true);
    assert.equal(
      ignored(['*.pcap'], 'sub/trace.pcap'),
      false,
      "a pattern without a folder is the context root's",
    );
  });
});
