/**
 * `nfstate lab` and `nfstate tcp`: the network-namespace testbed with real hosts, and the self-checking TCP
 * transfer that runs between them.
 *
 *   sudo nfstate lab                              # prints the lab as JSON, runs until Ctrl-C, then removes it
 *   sudo nfstate lab exec server -- nfstate tcp receive --port 5001
 *   sudo nfstate lab exec client -- nfstate tcp send --to 198.51.100.10:5001 --bytes 100M
 *   sudo nfstate lab down                         # removes what a crashed lab left behind
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { ErrorCode, NfsError } from '../errors.js';
import { loadTopology } from '../launcher/config.js';
import { CHAIN_TYPE } from '../nfs/index.js';
import { Lab, LAB_PREFIX, labDown, labTopology } from '../lab/lab.js';
import { parseBytes, receive, send } from '../lab/tcp.js';
import { parseHostPort } from '../launcher/config-fields.js';
import { int, signalled } from './args.js';

function bytes(v: string): number {
  try {
    return parseBytes(v);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

export function addLabCommands(program: Command): void {
  const lab = program
    .command('lab')
    .enablePositionalOptions()
    .description(
      'a testbed of network namespaces: a client and a server host with the deployment between them (root)',
    );
  lab
    .command('up', { isDefault: true })
    .description('make the lab and start the deployment in it; print it as JSON; remove it all on Ctrl-C')
    .option(
      '-c, --config <file>',
      'topology YAML: its NF or chain, sizes and options (the lab sets the edge)',
    )
    .addOption(
      new Option('--replication <mode>', 'batch replication between instances').choices([
        'cluster',
        'all',
        'off',
      ]),
    )
    .option('--clusters <n>', 'clusters', int('--clusters', 1, 16))
    .option('--per-cluster <n>', 'NF instances per cluster', int('--per-cluster', 1, 16))
    .option('--threads <n>', 'worker threads per instance', int('--threads', 1, 16))
    .option('--prefix <p>', 'names of everything the lab makes start with it', LAB_PREFIX)
    .option('--keep', 'keep the logs when the lab stops', false)
    .action(async (o: Record<string, unknown>) => {
      const base = typeof o.config === 'string' ? loadTopology(o.config) : undefined;
      // Back to the file's form: a chain is written `chain:`, not as its internal NF type.
      const file =
        base === undefined
          ? {}
          : base.nf.type === CHAIN_TYPE
            ? { ...structuredClone(base), nf: undefined, chain: base.nf.config.nfs }
            : structuredClone(base);
      const topology = labTopology({
        ...file,
        ...(o.replication === undefined ? {} : { replication: o.replication }),
        ...(o.clusters === undefined ? {} : { clusters: o.clusters }),
        ...(o.perCluster === undefined ? {} : { perCluster: o.perCluster }),
        ...(o.threads === undefined ? {} : { threads: o.threads }),
        edge: null,
      });
      const logDir = mkdtempSync(join(tmpdir(), 'nfstate-lab-'));
      const running = await Lab.start({ topology, logDir, prefix: o.prefix as string });
      try {
        // As `nfstate up` does: what an operator signs with (`nfstate scale add --key-file`), for this run.
        const operatorKey = join(logDir, 'operator.key');
        writeFileSync(operatorKey, running.running.operatorKey.toString('hex') + '\n', { mode: 0o600 });
        process.stdout.write(JSON.stringify({ ...running.describe(), operator_key: operatorKey }) + '\n');
        await signalled();
      } finally {
        await running.stop();
        if (o.keep !== true) rmSync(logDir, { recursive: true, force: true });
      }
    });
  lab
    .command('down')
    .description('remove every namespace, link and process of a lab (after a crash)')
    .option('--prefix <p>', 'the prefix the lab was made with', LAB_PREFIX)
    .action(async (o: Record<string, unknown>) => {
      process.stdout.write(JSON.stringify(await labDown(o.prefix as string)) + '\n');
    });
  lab
    .command('exec')
    .description("run a command in a host's namespace: nfstate lab exec client -- CMD ARGS")
    .argument('<host>', 'client | server')
    .argument('<command...>', 'the command and its arguments')
    .option('--prefix <p>', 'the prefix the lab was made with', LAB_PREFIX)
    .passThroughOptions()
    .action(async (host: string, command: string[], o: Record<string, unknown>) => {
      if (host !== 'client' && host !== 'server')
        throw new InvalidArgumentError(`lab exec: host must be client or server, not '${host}'`);
      if (process.getuid?.() !== 0) throw new NfsError(ErrorCode.CONFIG, 'nfstate lab exec needs root');
      const child = spawn('ip', ['netns', 'exec', `${o.prefix as string}${host}`, ...command], {
        stdio: 'inherit',
      });
      process.exitCode = await new Promise<number>((resolve) => {
        child.on('exit', (code, signal) => resolve(code ?? (signal === null ? 1 : 128)));
        child.on('error', () => resolve(127));
      });
    });

  const tcp = program
    .command('tcp')
    .description(
      'a TCP transfer that checks itself: SHA-256 at both ends, the longest stall at the receiver',
    );
  tcp
    .command('send')
    .description('send a deterministic stream and hash it; prints a JSON report')
    .requiredOption('--to <host:port>', 'the receiver')
    .option('--bytes <n>', 'how much (100M, 1G, …)', bytes, 100 * 1024 * 1024)
    .option('--idle-ms <ms>', 'give up after this long without progress', int('--idle-ms', 1), 10_000)
    .action(async (o: Record<string, unknown>) => {
      const to = parseHostPort(o.to as string, '--to');
      const report = await send({ ...to, bytes: o.bytes as number, idleMs: o.idleMs as number });
      process.stdout.write(JSON.stringify(report) + '\n');
      if (!report.completed) process.exitCode = 1;
    });
  tcp
    .command('receive')
    .description(
      'accept one connection, hash what arrives, time its stalls; progress and a report as JSON lines',
    )
    .option('--host <ip>', 'bind address', '0.0.0.0')
    .option('--port <n>', 'port', int('--port', 1, 65535), 5001)
    .option('--idle-ms <ms>', 'give up after this long without data', int('--idle-ms', 1), 10_000)
    .action(async (o: Record<string, unknown>) => {
      const report = await receive(
        { host: o.host as string, port: o.port as number, idleMs: o.idleMs as number },
        (p) => process.stdout.write(JSON.stringify(p) + '\n'),
      );
      process.stdout.write(JSON.stringify(report) + '\n');
      if (!report.completed) process.exitCode = 1;
    });
}
