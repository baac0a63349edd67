import type { z } from 'zod';
import type { Catalog } from '../catalog/build.js';
import type { LiveCatalog } from '../catalog/live.js';
import type { SdPublisher } from '../compile/publisher.js';
import type { Logger } from '../log.js';
import type { Counter, Registry } from '../metrics.js';
import type { Heartbeats } from '../nodes/heartbeats.js';
import type { HistoryEntry, RemoteStatus } from '../schema/answers.js';
import type { Writer } from '../writer/writer.js';
import type { AuthOptions } from './auth.js';
import type { PrimaryOptions } from './forward.js';
import type { BulkOptions, BulkReads } from './bulk.js';
import type { FailureLines } from './observe.js';
import type { health } from './spec/schemas.js';

/** What health says about the repository the server serves from, as the server keeps it (health adds the head and the remote's status). */
export type RepoHealth = Omit<z.infer<typeof health>['repo'], 'head' | 'remote'>;

/** Everything the HTTP layer needs, injected: no module singletons. */
export interface AppDeps {
  live: LiveCatalog;
  /** The published catalog: what every read and every credential check sees. */
  catalog: () => Catalog;
  sd: SdPublisher;
  writer: Writer;
  repo: () => RepoHealth;
  auth: AuthOptions;
  clock: () => Date;
  logger: Logger;
  /** The throttle of 401 and 429 lines, which the server flushes at its stop; one of the app's own when not given. */
  failureLines?: FailureLines;
  /** The server's metrics registry; the API adds its own metrics to it. */
  metrics: { registry: Registry };
  history: (pathspecs: string[]) => Promise<HistoryEntry[]>;
  /** False while starting or shutting down: health answers 503. */
  serving: () => boolean;
  /** Largest request body, in bytes. */
  maxBodyBytes?: number;
  heartbeats: Heartbeats;
  /** A node whose last heartbeat is older than this is listed as stale by health and /metrics. */
  staleAfterMs: number;
  /** Where bootstrap.sh and the other node scripts are served from. */
  scriptsDir: string;
  /** Optional files for nodes without internet access (a node_exporter tarball). */
  downloadsDir?: string;
  /** Prometheus's base URL: the console shows whether it scrapes each target up. */
  prometheusUrl?: string;
  /** The Git remote this server follows, when it has one. */
  remote?: { status: RemoteStatus; pull: () => Promise<void>; acceptRemoteHistory: () => Promise<void>; webhookSecret?: string };
  /** A follower forwards what writes to its primary. */
  primary?: PrimaryOptions;
  /** Shared by a primary and its followers: the primary believes the client address a follower passes on. */
  clusterSecret?: string;
  /** How big answers are paced while writes wait (BulkReads): the lanes' rates, a test's clock. */
  pacing?: Partial<BulkOptions>;
}

/** What the routes get: the injected dependencies, the API's own counters and its pacer of big answers. */
export interface RouteDeps extends AppDeps {
  registrations: Counter<'outcome'>;
  bulk: BulkReads;
}
