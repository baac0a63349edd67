import type { Settings, Target } from '../schema/index.js';
import { targetAddresses } from './address.js';
import type { Catalog } from './build.js';
import type { Problem } from './problem.js';

/** A claim key → the path of the file that held the claim before this change. */
export type Established = (key: string) => string | undefined;

export interface Candidate {
  path: string;
  /** Versions that fit the groups and aami.yaml, best first (current, then last good). */
  versions: Target[];
}

export interface Placement {
  accepted: Map<string, Target>;
  /** For files whose current version lost a claim: why (reported against that file). */
  problems: Map<string, Problem[]>;
  /** Each key two files claimed → the path that holds it. */
  contested: Map<string, string>;
  rejected: Set<string>;
}

interface Claim {
  key: string;
  /** The host name claimed, the "job address" key of the address claimed, or the node credential's hash. */
  hostname?: string;
  address?: string;
  credential?: string;
  field: string;
  message: (holder: string) => string;
}

export const hostKey = (hostname: string) => `host\u0000${hostname}`;
export const addressClaimKey = (address: string) => `addr\u0000${address}`;
export const credentialKey = (hash: string) => `cred\u0000${hash}`;

/** The keys of what a target claims. */
export function claimKeys(settings: Settings, target: Target): string[] {
  return claimsOf(settings, target).map((c) => c.key);
}

/** The host name and the addresses a target claims: no two targets may share one. */
function claimsOf(settings: Settings, target: Target): Claim[] {
  const claims: Claim[] = [{ key: hostKey(target.hostname), hostname: target.hostname, field: 'hostname', message: (holder) => `"${target.hostname}" is already registered by ${holder}` }];
  for (const { key, job, address, field } of targetAddresses(settings, target)) {
    claims.push({ key: addressClaimKey(key), address: key, field, message: (holder) => `address ${address} of job "${job}" is already used by ${holder}` });
  }
  // Two targets with one node credential: whoever holds it could act as either node.
  const hash = target.node_credential_hash;
  if (hash) claims.push({ key: credentialKey(hash), credential: hash, field: 'node_credential_hash', message: (holder) => `is the node credential of ${holder} too` });
  return claims;
}

/**
 * Decide which version of each candidate goes in, given targets already placed (`fixed`,
 * which keep their claims) and who held each claim before. For a claim two files make, the
 * established holder wins, else the file that comes first by path; the loser falls back to
 * its last good version, else contributes nothing. Rounds repeat until no claim is shared.
 * The full build and a registration's incremental change both place targets here, so they
 * decide every clash the same way.
 */
export function placeTargets(candidates: Candidate[], fixed: Pick<Catalog, 'targetPaths' | 'addresses' | 'nodeCredentials'>, options: { established: Established; settings: Settings }): Placement {
  const fixedHolder = (claim: Claim): string | undefined => {
    const hostname = claim.hostname ?? (claim.address !== undefined ? fixed.addresses.get(claim.address) : fixed.nodeCredentials.get(claim.credential!));
    return hostname === undefined ? undefined : fixed.targetPaths.get(hostname);
  };
  const sorted = [...candidates].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const byPath = new Map(sorted.map((c) => [c.path, c]));
  const index = new Map(sorted.map((c) => [c.path, 0]));
  const problems = new Map<string, Problem[]>();
  const contested = new Map<string, string>();
  const claimCache = new Map<Target, Claim[]>();
  const claimsFor = (target: Target) => claimCache.get(target) ?? claimCache.set(target, claimsOf(options.settings, target)).get(target)!;

  for (let round = 0; round <= sorted.length * 2 + 1; round++) {
    // Most keys have one claimant: only a second one makes a list.
    const first = new Map<string, { path: string; claim: Claim }>();
    const shared = new Map<string, Array<{ path: string; claim: Claim }>>();
    for (const candidate of sorted) {
      const version = candidate.versions[index.get(candidate.path)!];
      if (!version) continue;
      for (const claim of claimsFor(version)) {
        const entry = { path: candidate.path, claim };
        const earlier = first.get(claim.key);
        if (!earlier) first.set(claim.key, entry);
        else shared.get(claim.key)?.push(entry) ?? shared.set(claim.key, [earlier, entry]);
      }
    }
    const losers = new Map<string, Problem[]>();
    for (const [key, one] of first) {
      const holder = fixedHolder(one.claim);
      const list = shared.get(key) ?? [one];
      if (!holder && list.length === 1) continue;
      const before = options.established(key);
      const winner = holder ?? (before !== undefined && list.some((c) => c.path === before) ? before : list[0]!.path);
      contested.set(key, winner);
      for (const { path, claim } of list) {
        if (path === winner) continue;
        const problem = { file: path, field: claim.field, message: claim.message(winner) };
        const found = losers.get(path);
        if (found) found.push(problem);
        else losers.set(path, [problem]);
      }
    }
    if (!losers.size) break;
    for (const [path, found] of losers) {
      // The order of the file's own claims (host name, then each exporter), whatever order the clashes were met in.
      const order = claimsFor(byPath.get(path)!.versions[index.get(path)!]!).map((c) => c.field);
      found.sort((a, b) => order.indexOf(a.field) - order.indexOf(b.field));
      const at = index.get(path)!;
      if (at === 0) problems.set(path, found);
      index.set(path, at + 1);
    }
  }

  const accepted = new Map<string, Target>();
  const rejected = new Set<string>();
  for (const candidate of sorted) {
    const version = candidate.versions[index.get(candidate.path)!];
    if (version) accepted.set(candidate.path, version);
    else rejected.add(candidate.path);
  }
  return { accepted, problems, contested, rejected };
}
