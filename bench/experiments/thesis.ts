/**
 * What the thesis published, read off its plots (../shared/thesis in the project's sources; the values
 * are those of its README). Its prototype ran in Python on an i5-8400 with 6 cores. Each list is
 * [x, value] in the thesis's own units: ms per packet for latency, bytes/s for throughput.
 */
export const THESIS = {
  /** 4000 packets, 100 packets/s, batch 30, one NF; threads 1..5. */
  latencyVsThreads: [
    [1, 55],
    [2, 52],
    [3, 45],
    [4, 40],
    [5, 36],
  ],
  throughputVsThreads: [
    [1, 420],
    [2, 680],
    [3, 740],
    [4, 810],
    [5, 815],
  ],
  /** 4000 packets, 100 packets/s, 3 clusters, 12 NFs: the ends of its range, batch 10 and 100. */
  throughputVsBatch: {
    cluster: [
      [10, 3770],
      [100, 3900],
    ],
    noCluster: [
      [10, 3420],
      [100, 3800],
    ],
  },
  /** 4000 packets, batch 30, 3 clusters, 12 NFs; packets/s. */
  throughputVsRate: {
    cluster: [
      [25, 1070],
      [50, 2180],
      [100, 4420],
    ],
    noCluster: [
      [25, 1040],
      [50, 1990],
      [100, 4090],
    ],
  },
  /** 4000 packets, batch 30, 3 clusters, 9 NFs; packets/s. */
  latencyVsRateLb: {
    off: [
      [25, 580],
      [50, 290],
      [60, 150],
    ],
    on: [
      [25, 305],
      [50, 170],
      [60, 140],
    ],
  },
  /**
   * One flow, batch 30, 50 packets/s, 2 clusters of 2: each batch's state is about 3000 bytes (about 100
   * bytes per packet: its state is the packet history), the move inside the cluster after 68 packets
   * ships about 800 bytes (8 packets), the move across after 165 packets the whole history.
   */
  migration: {
    batchBytes: 3000,
    intraMoveBytes: 800,
    interMoveBytes: 16_500,
    intraAfter: 68,
    interAfter: 165,
  },
} as const satisfies Record<string, unknown>;

export type Series = readonly (readonly [number, number])[];
