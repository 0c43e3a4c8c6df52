/**
 * The process's own figures, under the names Prometheus's client libraries use (`process_*` as in
 * client_golang's process collector, `nodejs_*` as in prom-client), so that existing dashboards and alerts
 * for Node services read an nfstate role as they read any other.
 *
 * Their HELP and TYPE are in metric-catalog.ts with the rest.
 *
 *   registry.add(new ProcessMetrics());   // every role's admin server does this (launcher/roles.ts)
 */
import { readdirSync, readFileSync } from 'node:fs';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { MetricSample, MetricSource } from './types.js';

const NS_PER_S = 1e9;

export class ProcessMetrics implements MetricSource {
  private readonly startTime = Math.round(Date.now() / 1000 - process.uptime());
  private readonly maxFds = readMaxFds();
  private readonly version = { version: process.version, major: process.version.slice(1).split('.')[0]! };
  // 20 ms resolution: a libuv timer that cheap is invisible next to the packet path, and finer is noise.
  private readonly delay: IntervalHistogram = monitorEventLoopDelay({ resolution: 20 });

  constructor() {
    this.delay.enable();
  }

  collect(out: MetricSample[]): void {
    const cpu = process.cpuUsage();
    out.push(['process_cpu_user_seconds_total', {}, cpu.user / 1e6]);
    out.push(['process_cpu_system_seconds_total', {}, cpu.system / 1e6]);
    out.push(['process_cpu_seconds_total', {}, (cpu.user + cpu.system) / 1e6]);
    out.push(['process_start_time_seconds', {}, this.startTime]);
    const mem = process.memoryUsage();
    out.push(['process_resident_memory_bytes', {}, mem.rss]);
    const vsize = readVirtualBytes();
    if (vsize !== undefined) out.push(['process_virtual_memory_bytes', {}, vsize]);
    const fds = countOpenFds();
    if (fds !== undefined) out.push(['process_open_fds', {}, fds]);
    if (this.maxFds !== undefined) out.push(['process_max_fds', {}, this.maxFds]);
    out.push(['nodejs_heap_size_total_bytes', {}, mem.heapTotal]);
    out.push(['nodejs_heap_size_used_bytes', {}, mem.heapUsed]);
    out.push(['nodejs_external_memory_bytes', {}, mem.external]);
    // Before the first sample (a scrape right at start) the histogram reports NaN percentiles: say 0.
    const d = this.delay;
    const seen = d.count > 0;
    out.push(['nodejs_eventloop_lag_p50_seconds', {}, seen ? d.percentile(50) / NS_PER_S : 0]);
    out.push(['nodejs_eventloop_lag_p99_seconds', {}, seen ? d.percentile(99) / NS_PER_S : 0]);
    out.push(['nodejs_eventloop_lag_max_seconds', {}, seen ? d.max / NS_PER_S : 0]);
    d.reset();
    out.push(['nodejs_version_info', this.version, 1]);
  }

  /** Stops the event-loop sampler, so that a process that stops its admin server can exit. */
  close(): void {
    this.delay.disable();
  }
}

/** /proc is Linux's; elsewhere the figures it gives are left out rather than made up. */
function readVirtualBytes(): number | undefined {
  try {
    // Field 23 of /proc/self/stat, counted after the command name, which may itself hold spaces.
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[20]);
  } catch {
    return undefined;
  }
}

function countOpenFds(): number | undefined {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return undefined;
  }
}

function readMaxFds(): number | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const soft = line?.split(/\s{2,}/)[1];
    return soft === undefined || soft === 'unlimited' ? undefined : Number(soft);
  } catch {
    return undefined;
  }
}
