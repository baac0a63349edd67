import client from 'prom-client';
import { VERSION } from './package/files.js';

/**
 * The server's own metrics, by prom-client: Node's process and runtime metrics
 * (`process_*`, `nodejs_*`), `aami_build_info`, and the aami metrics the server and the API
 * add. The classes below keep the server's wiring short: each wraps one prom-client metric,
 * registered on a `Registry` with `add`.
 */
type Labels = Record<string, string>;

interface Wrapped {
  readonly metric: client.Metric;
}

export class Registry {
  readonly prom = new client.Registry();
  /** Metrics whose labels name hosts: rendered only for callers who may read the inventory. */
  private readonly named = new client.Registry();

  /** `runtime: false` leaves out the process and Node.js metrics (and aami_build_info). */
  constructor(options: { runtime?: boolean } = {}) {
    if (options.runtime === false) return;
    // The event-loop delay histogram samples every 100 ms, not prom-client's 10: a hundred
    // wake-ups a second cost an idle server ~7 ms of CPU a second (16 -> 9 ms measured), and
    // a stall still shows in the samples it holds up.
    client.collectDefaultMetrics({ register: this.prom, eventLoopMonitoringPrecision: 100 });
    // Gauges named *_total, which promtool's lint refuses; nodejs_active_{handles,requests,resources} by type remain.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) this.prom.removeSingleMetric(name);
    const build = new client.Gauge({
      name: 'aami_build_info',
      help: 'Always 1; the labels say which aami runs, on which Node.js.',
      labelNames: ['version', 'nodejs_version'],
      registers: [this.prom],
    });
    build.set({ version: VERSION, nodejs_version: process.versions.node }, 1);
  }

  /** `namesHosts`: its labels name hosts (see render). */
  add<M extends Wrapped>(metric: M, options: { namesHosts?: boolean } = {}): M {
    (options.namesHosts ? this.named : this.prom).registerMetric(metric.metric);
    return metric;
  }

  /** The text exposition format, as Prometheus scrapes it; with `names` (a caller who may see them), the metrics that name hosts too. */
  async render(names: boolean): Promise<string> {
    const text = await this.prom.metrics();
    return names ? text + (await this.named.metrics()) : text;
  }

  get contentType(): string {
    return this.prom.contentType;
  }
}

export class Counter<L extends string = never> implements Wrapped {
  readonly metric: client.Counter<L>;
  constructor(name: string, help: string, labelNames: readonly L[] = []) {
    this.metric = new client.Counter({ name, help, labelNames, registers: [] });
  }
  inc(labels: Partial<Record<L, string>> = {}, by = 1): void {
    this.metric.inc(labels, by);
  }
}

/** A gauge read when scraped. */
export class Gauge implements Wrapped {
  readonly metric: client.Gauge;
  constructor(name: string, help: string, read: () => number) {
    this.metric = new client.Gauge({
      name,
      help,
      registers: [],
      collect() {
        this.set(read());
      },
    });
  }
}

/** One gauge series per label set, read when scraped (e.g. each node's last heartbeat). */
export class GaugeFamily implements Wrapped {
  readonly metric: client.Gauge;
  constructor(name: string, help: string, labelNames: readonly string[], read: () => Iterable<[Labels, number]>) {
    this.metric = new client.Gauge({
      name,
      help,
      labelNames,
      registers: [],
      collect() {
        this.reset();
        for (const [labels, value] of read()) this.set(labels, value);
      },
    });
  }
}

export const SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

export class Histogram<L extends string = never> implements Wrapped {
  readonly metric: client.Histogram<L>;
  constructor(name: string, help: string, labelNames: readonly L[] = [], buckets = SECONDS_BUCKETS) {
    this.metric = new client.Histogram({ name, help, labelNames, buckets, registers: [] });
  }
  observe(seconds: number, labels: Partial<Record<L, string>> = {}): void {
    this.metric.observe(labels, seconds);
  }
}
