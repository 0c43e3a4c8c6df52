/**
 * Every metric nfstate serves: its type, the labels its series carry, and the HELP text `/metrics` gives it.
 * The registry (metrics.ts) renders HELP and TYPE from here, docs/metrics.md is this table in prose, and a
 * test scrapes every role and checks that nothing is served that is not listed here (and that `promtool
 * check metrics` agrees). A process's own figures (`process_*`, `nodejs_*`, process-metrics.ts) keep the names
 * and HELP texts of Prometheus's client libraries, so that dashboards made for those read them too.
 */

export type MetricType = 'counter' | 'gauge' | 'histogram';

/** The role whose `/metrics` serves a metric ('any': every role's). */
export type MetricRole = 'any' | 'ingress' | 'nf' | 'controller' | 'sink';

export interface MetricInfo {
  type: MetricType;
  role: MetricRole;
  labels: readonly string[];
  help: string;
}

const c = (role: MetricRole, help: string, labels: readonly string[] = []): MetricInfo => ({
  type: 'counter',
  role,
  labels,
  help,
});
const g = (role: MetricRole, help: string, labels: readonly string[] = []): MetricInfo => ({
  type: 'gauge',
  role,
  labels,
  help,
});
const h = (role: MetricRole, help: string, labels: readonly string[] = []): MetricInfo => ({
  type: 'histogram',
  role,
  labels,
  help,
});

/** Bucket bounds (seconds) of the per-packet and per-acknowledgement histograms: 25 µs to 1 s. */
export const LATENCY_BUCKETS = [
  0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
] as const;
/** Bucket bounds (seconds) of the move and failover histograms: 1 ms to 5 s. */
export const CONTROL_BUCKETS = [
  0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.035, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5,
] as const;

const DROP = ['reason'];
const NF = ['nf'];

export const METRICS: Readonly<Record<string, MetricInfo>> = {
  nfstate_metrics_collect_errors_total: c(
    'any',
    'Scrapes in which a metric source failed (its series were left out).',
  ),
  nfstate_admin_rejected_total: c('any', 'Admin requests refused for their signature, by reason.', DROP),

  process_cpu_user_seconds_total: c('any', 'User CPU time spent in seconds.'),
  process_cpu_system_seconds_total: c('any', 'System CPU time spent in seconds.'),
  process_cpu_seconds_total: c('any', 'Total user and system CPU time spent in seconds.'),
  process_start_time_seconds: g('any', 'Start time of the process since unix epoch in seconds.'),
  process_resident_memory_bytes: g('any', 'Resident memory size in bytes.'),
  process_virtual_memory_bytes: g('any', 'Virtual memory size in bytes.'),
  process_open_fds: g('any', 'Number of open file descriptors.'),
  process_max_fds: g('any', 'Maximum number of open file descriptors.'),
  nodejs_heap_size_total_bytes: g('any', 'Process heap size from Node.js in bytes.'),
  nodejs_heap_size_used_bytes: g('any', 'Process heap size used from Node.js in bytes.'),
  nodejs_external_memory_bytes: g('any', 'Node.js external memory size in bytes.'),
  nodejs_eventloop_lag_p50_seconds: g(
    'any',
    'The 50th percentile of the event loop delay since the last scrape, in seconds.',
  ),
  nodejs_eventloop_lag_p99_seconds: g(
    'any',
    'The 99th percentile of the event loop delay since the last scrape, in seconds.',
  ),
  nodejs_eventloop_lag_max_seconds: g(
    'any',
    'The longest event loop delay since the last scrape, in seconds.',
  ),
  nodejs_version_info: g('any', 'Node.js version info.', ['version', 'major']),

  nfstate_stamper_packets_total: c('ingress', 'Packets stamped with their flow sequence number.'),
  nfstate_stamper_flows: g('ingress', 'Flows the stamper holds a sequence counter for.'),
  nfstate_stamper_flows_created_total: c('ingress', 'Flows the stamper began counting.'),
  nfstate_stamper_flows_expired_total: c('ingress', 'Flows the stamper forgot after their idle timeout.'),
  nfstate_ingress_received_total: c('ingress', 'Datagrams received at the ingress, malformed ones included.'),
  nfstate_ingress_forwarded_total: c('ingress', 'Stamped packets sent to the instance that owns their flow.'),
  nfstate_ingress_secondary_copies_total: c('ingress', "Copies of packets sent to their flow's secondary."),
  nfstate_ingress_move_markers_total: c(
    'ingress',
    "End-of-move markers sent behind a moved flow's last packet to its source.",
  ),
  nfstate_ingress_no_route_total: c('ingress', 'Packets no rule and no default instance could take.'),
  nfstate_ingress_ovs_frames_total: c(
    'ingress',
    'Frames an OVS bridge routed: sent where it said (followed), or by a newer rule of the ingress (overridden).',
    ['route'],
  ),
  nfstate_ingress_send_errors_total: c('ingress', 'Packets the ingress could not send.'),
  nfstate_ingress_dropped_total: c('ingress', 'Datagrams dropped at the ingress, by reason.', DROP),
  nfstate_ingress_replies_resolved_total: c('ingress', 'Replies matched to the connection they answer.'),
  nfstate_ingress_replies_parked_total: c('ingress', 'Replies held until the mapping they answer is known.'),
  nfstate_ingress_replies_unmatched_total: c('ingress', 'Replies that answered no known connection.'),
  nfstate_ingress_replies_overflow_total: c('ingress', 'Replies dropped because too many were waiting.'),
  nfstate_switch_rules: g('ingress', 'Exact per-flow rules in the switch, pins of running flows included.'),
  nfstate_switch_default_packets_total: c('ingress', 'Packets sent by the default rule (no exact rule yet).'),
  nfstate_switch_stale_rules_total: c('ingress', 'Rule changes refused because their epoch was older.'),
  nfstate_switch_rule_packets_total: c(
    'ingress',
    "Packets matched by a flow's exact rule from the controller (not a pin).",
    ['flow'],
  ),
  nfstate_switch_rule_bytes_total: c(
    'ingress',
    "Bytes matched by a flow's exact rule from the controller (not a pin).",
    ['flow'],
  ),
  nfstate_edge_arp_answered_total: c('ingress', 'ARP requests the VXLAN edge answered for the gateway.'),
  nfstate_edge_arp_carried_total: c('ingress', 'ARP frames carried across the edge unstamped.'),

  nfstate_nf_received_total: c('nf', 'Packets an instance received.', NF),
  nfstate_nf_handed_total: c(
    'nf',
    "Of those, packets that reached a worker through the instance's main thread (replays, parked packets of a move).",
    NF,
  ),
  nfstate_nf_processed_total: c('nf', "Packets run through the NF, in their flow's stamp order.", NF),
  nfstate_nf_forwarded_total: c('nf', 'Processed packets sent on.', NF),
  nfstate_nf_nf_dropped_total: c('nf', "Packets the NF's own policy dropped (a firewall's deny).", NF),
  nfstate_nf_held_total: c('nf', 'Packets held because an earlier stamp of their flow had not arrived.', NF),
  nfstate_nf_gap_skipped_total: c('nf', 'Missing stamps given up on after the hold timeout.', NF),
  nfstate_nf_batches_total: c('nf', 'Per-flow batches closed (each a replication record).', NF),
  nfstate_nf_delta_bytes_total: c('nf', 'Bytes of state changes the closed batches carried.', NF),
  nfstate_nf_flows_created_total: c('nf', 'Flows whose state an instance created.', NF),
  nfstate_nf_flows_expired_total: c('nf', 'Flows whose state expired.', NF),
  nfstate_nf_events_total: c('nf', 'Events the NF raised (IDS alerts, for instance).', NF),
  nfstate_nf_deciding_total: c('nf', 'New flows whose packets waited for a strong global decision.', NF),
  nfstate_nf_move_overflows_total: c(
    'nf',
    'Moves given back because the source parked too many packets.',
    NF,
  ),
  nfstate_nf_move_timeouts_total: c(
    'nf',
    'Moves the source took back because no commit came before their deadline.',
    NF,
  ),
  nfstate_nf_late_processed_total: c(
    'nf',
    "Packets a loss-free move's destination processed behind later ones.",
    NF,
  ),
  nfstate_nf_flows: g('nf', 'Flows an instance owns.', NF),
  nfstate_nf_send_errors_total: c('nf', 'Output and parked packets the sockets could not send.', NF),
  nfstate_nf_dropped_total: c('nf', 'Datagrams dropped at an instance, by reason.', ['nf', 'reason']),
  nfstate_nf_bad_copies_total: c('nf', 'Secondary copies that were malformed or not addressed here.', NF),
  nfstate_nf_bad_global_states_total: c('nf', 'Eventual global states from peers that failed to decode.', NF),
  nfstate_replication_sent_bytes_total: c('nf', 'Bytes of replication frames sent to cluster peers.'),
  nfstate_replication_messages_total: c('nf', 'Replication sends (each to every connected peer).'),
  nfstate_replication_dropped_messages_total: c('nf', 'Replication sends no peer was connected to take.'),
  nfstate_replication_committed: g('nf', 'The last replication send every connected peer acknowledged.'),
  nfstate_replication_repairs_requested_total: c('nf', 'Flows a peer asked for in full.'),
  nfstate_replication_catch_up_bytes_total: c('nf', 'Bytes of full state sent to peers that (re)joined.'),
  nfstate_replication_catch_ups_total: c('nf', 'Catch-ups sent to peers that (re)joined.'),
  nfstate_replication_ack_seconds: h(
    'nf',
    "From sending a batch's records to a peer until it acknowledged them.",
    ['peer'],
  ),
  nfstate_replication_received_bytes_total: c('nf', 'Bytes of replication frames received from peers.'),
  nfstate_replication_records_total: c('nf', 'Replication records applied to replicas.'),
  nfstate_replication_repairs_asked_total: c('nf', 'Flows this replica asked an owner for in full.'),
  nfstate_replication_replicas: g('nf', 'Flows held as replicas of cluster peers.'),
  nfstate_replication_unrefreshed_dropped_total: c(
    'nf',
    'Replicas dropped because a catch-up did not refresh them.',
  ),
  nfstate_replication_rejected_total: c('nf', 'Replication frames or records refused, by reason.', DROP),
  nfstate_replay_log_kept_total: c('nf', "Copies of packets kept for a flow's failover."),
  nfstate_replay_log_trimmed_total: c('nf', 'Kept copies discarded once a replicated batch covered them.'),
  nfstate_replay_log_refused_total: c('nf', 'Copies refused because the log was full.'),
  nfstate_replay_log_swept_total: c('nf', 'Copies discarded for flows that went idle.'),
  nfstate_replay_log_bytes: g('nf', 'Bytes of kept copies.'),
  nfstate_replay_log_flows: g('nf', 'Flows with kept copies.'),
  nfstate_strong_pool_claims_total: c('nf', 'Values claimed from strong global pools.'),
  nfstate_strong_pool_decisions_total: c('nf', 'Decisions read back from the ordered log.'),
  nfstate_strong_pool_conflicts_total: c('nf', 'Claims that lost to an earlier claim of the same value.'),
  nfstate_strong_pool_releases_total: c('nf', 'Values given back to strong global pools.'),
  nfstate_strong_pool_batches_total: c('nf', 'Groups of claims submitted to the log together.'),
  nfstate_strong_pool_resubmits_total: c('nf', 'Claims submitted again after a failed or lost submit.'),
  nfstate_strong_pool_failed_total: c('nf', 'Claims that failed for good (the log was unreachable).'),
  nfstate_strong_pool_malformed_total: c('nf', 'Log entries that failed to decode.'),
  nfstate_strong_pool_undeclared_total: c('nf', 'Log entries for a pool this instance does not declare.'),
  nfstate_strong_pool_pending: g('nf', 'Claims waiting for their decision.'),
  nfstate_strong_pool_in_use: g('nf', 'Values of a strong pool held by some flow.', ['pool']),

  nfstate_controller_instances: g('controller', 'Instances registered.'),
  nfstate_controller_clusters: g('controller', 'Clusters formed.'),
  nfstate_controller_load_reports_total: c('controller', 'Load reports received from instances.'),
  nfstate_controller_bad_load_reports_total: c('controller', 'Load reports that failed to decode or verify.'),
  nfstate_controller_bad_liveness_connections_total: c(
    'controller',
    'Liveness connections closed for a bad hello.',
  ),
  nfstate_controller_reconfigure_failures_total: c(
    'controller',
    'Failed tries of a reconfiguration step after a change of membership.',
    ['step'],
  ),
  nfstate_controller_reconfigure_abandoned_total: c(
    'controller',
    'Reconfiguration steps given up after every retry.',
    ['step'],
  ),
  nfstate_controller_move_seconds: h(
    'controller',
    'Duration of a move exchange, from the request to the hand-over, done or aborted.',
    ['kind', 'result'],
  ),
  nfstate_controller_failover_recovery_seconds: h(
    'controller',
    "From a failed instance's last sign of life until the switch sent its flows to the successor.",
  ),
  nfstate_fdu_detection_seconds: h(
    'controller',
    "From a failed instance's last sign of life until it was declared failed.",
  ),
  nfstate_fdu_failures_total: c('controller', 'Instances declared failed.'),
  nfstate_fdu_heartbeats_total: c('controller', 'Heartbeats received.'),
  nfstate_fdu_bad_heartbeats_total: c('controller', 'Heartbeats that failed to decode or verify.'),
  nfstate_fdu_fenced_heartbeats_total: c('controller', 'Heartbeats from instances already declared failed.'),
  nfstate_fdu_suspended_checks_total: c(
    'controller',
    'Checks that declared nobody because too many instances were silent at once.',
  ),
  nfstate_fdu_probes_total: c('controller', 'Direct probes sent to suspected instances.'),
  nfstate_fdu_suspicions_cleared_total: c('controller', 'Suspected instances that answered their probe.'),
  nfstate_lb_rounds_total: c('controller', 'Rounds of the load-balancing unit.'),
  nfstate_lb_moves_total: c('controller', 'Flows the load-balancing unit moved, inside or across clusters.', [
    'kind',
  ]),
  nfstate_lb_aborted_moves_total: c('controller', 'Moves of the load-balancing unit that aborted.'),
  nfstate_lb_scale_out_requests_total: c(
    'controller',
    'Times the load-balancing unit asked for another instance.',
  ),
  nfstate_lb_load: g('controller', "An instance's load (1 = its capacity).", NF),
  nfstate_lb_overloaded_instances: g('controller', 'Instances above the overload threshold.'),
  nfstate_election_leader: g('controller', 'Whether this controller leads (1) or stands by (0).', ['id']),
  nfstate_election_terms_total: c('controller', 'Terms this controller began as leader.'),
  nfstate_election_demotions_total: c('controller', 'Times this controller lost its lease while leading.'),
  nfstate_election_resignations_total: c('controller', 'Times this controller gave its lease up.'),
  nfstate_election_renewal_failures_total: c('controller', 'Lease renewals that failed.'),
  nfstate_election_call_failures_total: c(
    'controller',
    'Calls to etcd that failed or passed their deadline.',
  ),
  nfstate_election_leader_changes_total: c('controller', 'Changes of leader this controller saw.'),

  nfstate_sink_received_total: c('sink', 'Datagrams received at the sink.'),
  nfstate_sink_delivered_total: c('sink', 'Packets delivered, each (flow, stamp) once.'),
  nfstate_sink_reordered_total: c('sink', 'Packets that arrived behind a later stamp of their flow.'),
  nfstate_sink_duplicated_total: c(
    'sink',
    'Packets whose (flow, stamp) was delivered already, replays not counted.',
  ),
  nfstate_sink_replays_dropped_total: c(
    'sink',
    'Replayed packets dropped because their stamp was delivered already.',
  ),
  nfstate_sink_fenced_total: c('sink', 'Packets dropped because the instance that sent them was fenced.'),
  nfstate_sink_flows: g('sink', 'Flows the sink has seen.'),
  nfstate_sink_send_errors_total: c('sink', 'Packets the egress could not send on.'),
  nfstate_sink_dropped_total: c('sink', 'Datagrams dropped at the sink, by reason.', DROP),
  nfstate_sink_latency_seconds: h('sink', "Per-packet latency from the ingress's stamp to the sink."),
  nfstate_edge_delivered_total: c('sink', 'Packets encapsulated toward their VTEP.'),
  nfstate_edge_arp_requests_total: c('sink', 'ARP requests the edge sent for unknown neighbours.'),
  nfstate_edge_neighbours_learned_total: c('sink', 'Neighbours learned from ARP replies.'),
  nfstate_edge_neighbours: g('sink', 'Neighbours the edge knows.'),
  nfstate_edge_dropped_total: c('sink', 'Packets the egress edge dropped, by reason.', DROP),
};
