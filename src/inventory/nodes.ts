import type { Catalog } from '../catalog/build.js';
import { durationSeconds } from '../catalog/checks.js';
import { targetPath, tokenPath } from '../catalog/parse.js';
import { AamiError } from '../errors.js';
import type { Writer } from '../writer/writer.js';
import type { Target } from '../schema/index.js';
import { commitMeta } from './actor.js';
import { requireTarget } from './targets.js';

/**
 * A node leaves the fleet (uninstall.sh, or an ephemeral node shutting down): its target is
 * deleted in a commit authored by the node. A token created with allow_deregister: false
 * keeps its nodes until an admin removes them.
 */
export function deregisterNode(writer: Writer, hostname: string, address: string) {
  return writer.update(commitMeta({ kind: 'node', hostname, address }, `Deregister ${hostname}`), ({ catalog }, files) => {
    const target = requireTarget(catalog, hostname);
    const id = target.registered_by_token;
    const token = id ? catalog.tokens.get(id) : undefined;
    if (token && !token.allow_deregister) {
      throw new AamiError('forbidden', `bootstrap token ${token.id} does not let its nodes deregister themselves; ask an admin to delete ${hostname}`, { token_id: token.id });
    }
    // A token whose file is broken is not served (it fails closed), and what it allows cannot be read: its nodes stay.
    if (id && !token && files.present(tokenPath(id))) {
      throw new AamiError('forbidden', `bootstrap token ${id}'s file ${tokenPath(id)} is invalid, so whether its nodes may deregister themselves cannot be read: fix the file, or ask an admin to delete ${hostname}`, { token_id: id });
    }
    return { changes: [{ path: targetPath(target), content: null }], result: { deleted: hostname } };
  });
}

/**
 * The targets of ephemeral tokens whose node has been silent longer than the token's TTL
 * (since its last heartbeat, its enrolment when it never sent one, or `listeningSince`,
 * whichever is latest). Only ephemeral targets are ever removed by the server; other stale
 * targets are reported, never deleted.
 *
 * `listeningSince` is when this server began to take heartbeats: a node is silent only for
 * time the server could hear it. A server down longer than a TTL (an upgrade, a reboot), or
 * one that lost its heartbeats file, found every ephemeral node silent at its first look and
 * removed the whole fleet in one commit, nodes that were sending heartbeats all along, and
 * that never enrol again on their own.
 */
export function silentEphemeralTargets(catalog: Catalog, lastSeen: (hostname: string) => Date | undefined, now: Date, listeningSince: Date): Target[] {
  const silent: Target[] = [];
  // Token id → its TTL in ms, for the ephemeral tokens that have one.
  const ttls = new Map<string, number>();
  for (const [id, token] of catalog.tokens) if (token.ephemeral && token.ttl_after_last_seen) ttls.set(id, durationSeconds(token.ttl_after_last_seen) * 1000);
  // Checked every 15 s: without such a token, 100k targets need not be walked.
  if (!ttls.size) return silent;
  for (const target of catalog.targets.values()) {
    const ttl = target.registered_by_token ? ttls.get(target.registered_by_token) : undefined;
    if (ttl === undefined) continue;
    const seen = Math.max(lastSeen(target.hostname)?.getTime() ?? (target.registered_at ? Date.parse(target.registered_at) : now.getTime()), listeningSince.getTime());
    if (now.getTime() - seen > ttl) silent.push(target);
  }
  return silent;
}

/** Remove silent ephemeral nodes in one commit of their own, authored by the server. Resolves to the host names removed. */
export async function reapEphemeralTargets(writer: Writer, lastSeen: (hostname: string) => Date | undefined, now: () => Date, listeningSince: Date): Promise<string[]> {
  const { removed } = await writer.update(commitMeta({ kind: 'server', task: 'ephemeral-reaper' }, 'Remove silent ephemeral nodes'), ({ catalog }) => {
    const silent = silentEphemeralTargets(catalog, lastSeen, now(), listeningSince);
    const names = silent.map((t) => t.hostname).sort();
    const shown = names.slice(0, 20).join(', ') + (names.length > 20 ? `, … (${names.length} in all)` : '');
    return {
      changes: silent.map((t) => ({ path: targetPath(t), content: null })),
      message: `Remove ${names.length} ephemeral node${names.length === 1 ? '' : 's'} silent past their token's TTL: ${shown}`,
      result: { removed: names },
    };
  });
  return removed;
}

/**
 * Targets whose node sent a heartbeat once but not for `staleAfterMs`: listed by health and
 * /metrics, never removed. From the heartbeats (host name → ms since the epoch), not from the
 * catalog: a walk of 100k targets cost each health call and each scrape ~35 ms of CPU, and only
 * the silent hosts are looked up.
 */
export function staleTargets(catalog: Catalog, heartbeats: Iterable<[hostname: string, atMs: number]>, now: Date, staleAfterMs: number): string[] {
  const stale: string[] = [];
  const before = now.getTime() - staleAfterMs;
  for (const [hostname, at] of heartbeats) if (at < before && catalog.targets.has(hostname)) stale.push(hostname);
  return stale.sort();
}

/**
 * Whether a server counts silent nodes: not a follower of a primary. It forwards heartbeats
 * there and keeps only those that came through it, so it would call a node that reports to
 * the primary directly (or through another follower) silent; the primary sees them all.
 */
export const countsSilentNodes = (server: { primary?: unknown }): boolean => !server.primary;

/** staleTargets as a server tells them (health, the console): undefined where it does not count them (countsSilentNodes). */
export function countedStaleTargets(server: { primary?: unknown; catalog: () => Catalog; heartbeats: { entries(): Iterable<[string, number]> }; clock: () => Date; staleAfterMs: number }): string[] | undefined {
  return countsSilentNodes(server) ? staleTargets(server.catalog(), server.heartbeats.entries(), server.clock(), server.staleAfterMs) : undefined;
}
