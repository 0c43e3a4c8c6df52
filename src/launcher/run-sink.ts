/**
 * The sink as a process (`nfstate role sink`, or `nfstate sink`): the end of the path, checking every flow by
 * stamp, with the egress to real hosts, and the fence a failover sets. Started by hand, it prints its ports
 * as one JSON line, and its report as another when it stops (SIGINT, SIGTERM).
 */
import { createLogger } from '../log.js';
import { LinkType, PcapWriter } from '../traffic/pcap.js';
import { Sink } from '../traffic/sink.js';
import { HostTable } from '../edge/hosts.js';
import { type SinkSpec, serveAdmin, attach } from './roles.js';

export async function runSink(spec: SinkSpec): Promise<void> {
  const logger = createLogger('sink');
  const sink = new Sink(
    {
      host: spec.host,
      port: spec.port,
      ...(spec.ackTo === null ? {} : { ackTo: spec.ackTo }),
      ...(spec.deliver === null ? {} : { deliver: spec.deliver }),
      ...(spec.pcap === null ? {} : { pcap: new PcapWriter(spec.pcap, LinkType.RAW) }),
      ...(spec.edge === undefined || spec.edge === null ? {} : { edge: new HostTable(spec.edge) }),
    },
    logger,
  );
  const { port } = await sink.start();
  const { admin } = await serveAdmin(spec, sink);
  admin.route('GET', '/report', () => sink.report());
  admin.route('POST', '/fence', (body) => {
    const b = (body ?? {}) as Record<string, unknown>;
    sink.fence(b.emitter as number, b.since_ms === undefined ? 0 : (b.since_ms as number));
    return { ok: true };
  });
  attach(
    {
      collect: (out) => {
        sink.collect(out);
      },
      stop: async () => {
        const report = sink.report();
        await sink.stop();
        // Started by hand, its report is what the operator waited for: the last line on stdout.
        if (!process.connected)
          process.stdout.write(
            JSON.stringify({ ...report, flows: report.flows.length, histogram: undefined }) + '\n',
          );
      },
      report: () => sink.report(),
    },
    admin,
    { port, admin: admin.port },
  );
}
