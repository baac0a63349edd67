import { z } from 'zod';

/** The jobs in which Prometheus scrapes a host successfully (up 1) and not (up 0). */
export interface ScrapeState {
  up: string[];
  down: string[];
}

export type UpStates = { byHost: Map<string, ScrapeState> } | { error: string };

export interface PrometheusOptions {
  /** How long one answer is reused: every page view within it costs Prometheus nothing. */
  ttlMs: number;
  timeoutMs: number;
  /** Largest answer read (a fleet of 10k targets with two jobs answers about 4 MB). */
  maxBytes: number;
  now: () => number;
}

const DEFAULTS: PrometheusOptions = { ttlMs: 10_000, timeoutMs: 3_000, maxBytes: 64 * 1024 * 1024, now: Date.now };

/** Prometheus's instant-query answer, checked: whatever answers at the URL is data, not trusted. */
const answer = z.object({
  status: z.literal('success'),
  data: z.object({
    resultType: z.literal('vector'),
    result: z.array(z.object({ metric: z.record(z.string(), z.string()), value: z.tuple([z.number(), z.string()]) })),
  }),
});

/**
 * Whether Prometheus scrapes each aami target `up`, asked by the server (never the browser:
 * Prometheus need not be reachable from it) with `up{aami_group!=""}` — aami sets
 * `aami_group` and `hostname` on every target it serves. One request at a time, and its
 * answer (or its failure) is kept for ttlMs.
 */
export class PrometheusUp {
  private readonly queryUrl: string;
  private readonly authorization: string | undefined;
  private readonly options: PrometheusOptions;
  private cached: { at: number; states: UpStates } | undefined;
  private inflight: Promise<UpStates> | undefined;
  /** The URL without any password, for pages. */
  readonly shownUrl: string;

  constructor(url: string, options: Partial<PrometheusOptions> = {}) {
    this.options = { ...DEFAULTS, ...options };
    const base = new URL(url.endsWith('/') ? url : `${url}/`);
    // fetch() refuses a URL with credentials in it: they go in a header instead.
    this.authorization = base.username ? `Basic ${Buffer.from(`${decodeURIComponent(base.username)}:${decodeURIComponent(base.password)}`).toString('base64')}` : undefined;
    base.username = '';
    base.password = '';
    this.shownUrl = base.href;
    const query = new URL('api/v1/query', base);
    query.searchParams.set('query', 'up{aami_group!=""}');
    this.queryUrl = query.href;
  }

  states(): Promise<UpStates> {
    const { cached } = this;
    if (cached && this.options.now() - cached.at < this.options.ttlMs) return Promise.resolve(cached.states);
    this.inflight ??= this.ask()
      .then((states) => {
        this.cached = { at: this.options.now(), states };
        return states;
      })
      .finally(() => (this.inflight = undefined));
    return this.inflight;
  }

  private async ask(): Promise<UpStates> {
    try {
      const response = await fetch(this.queryUrl, {
        headers: this.authorization ? { authorization: this.authorization } : {},
        redirect: 'error',
        signal: AbortSignal.timeout(this.options.timeoutMs),
      });
      if (!response.ok) {
        await response.body?.cancel();
        return { error: `Prometheus at ${this.shownUrl} answered HTTP ${response.status}` };
      }
      const parsed = answer.safeParse(JSON.parse(await readLimited(response, this.options.maxBytes)));
      if (!parsed.success) return { error: `Prometheus at ${this.shownUrl} gave an answer that is not an instant vector` };
      const byHost = new Map<string, ScrapeState>();
      for (const { metric, value } of parsed.data.data.result) {
        const hostname = metric.hostname;
        if (!hostname) continue;
        let state = byHost.get(hostname);
        if (!state) byHost.set(hostname, (state = { up: [], down: [] }));
        (value[1] === '1' ? state.up : state.down).push(metric.job ?? '');
      }
      return { byHost };
    } catch (error) {
      return { error: `cannot ask Prometheus at ${this.shownUrl}: ${reason(error)}` };
    }
  }
}

async function readLimited(response: Response, maxBytes: number): Promise<string> {
  if (!response.body) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
    size += chunk.length;
    if (size > maxBytes) throw new Error(`the answer is larger than ${maxBytes} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function reason(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  if (error.name === 'TimeoutError') return 'no answer in time';
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? error.message;
}
