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
  rejected: Set<string>;
}

interface Claim {
  key: string;
  /** The file whose version makes the claim ('' outside placeTargets). */
  path: string;
  kind: 'host' | 'address' | 'credential';
  /** The host name, the "job address" key of the address, or the node credential's hash: what fixed holders are looked up by. */
  value: string;
  field: string;
  /** For the message: the address as written and its job ('' for other kinds: every claim has one shape). */
  address: string;
  job: string;
}

export const hostKey = (hostname: string) => `host\u0000${hostname}`;
export const addressClaimKey = (address: string) => `addr\u0000${address}`;
export const credentialKey = (hash: string) => `cred\u0000${hash}`;

/** The keys of what a target claims. */
export function claimKeys(settings: Settings, target: Target): string[] {
  return claimsOf(settings, target).map((c) => c.key);
}

/**
 * The host name and the addresses a target claims: no two targets may share one. Plain
 * records of one shape (a full build makes ~400k at 100k targets); messages are written
 * only for a claim that is lost.
 */
function claimsOf(settings: Settings, target: Target, path = ''): Claim[] {
  const claims: Claim[] = [{ key: hostKey(target.hostname), path, kind: 'host', value: target.hostname, field: 'hostname', address: '', job: '' }];
  for (const { key, job, address, field } of targetAddresses(settings, target)) {
    claims.push({ key: addressClaimKey(key), path, kind: 'address', value: key, field, address, job });
  }
  // Two targets with one node credential: whoever holds it could act as either node.
  const hash = target.node_credential_hash;
  if (hash) claims.push({ key: credentialKey(hash), path, kind: 'credential', value: hash, field: 'node_credential_hash', address: '', job: '' });
  return claims;
}

function lostClaim(claim: Claim, holder: string): string {
  if (claim.kind === 'host') return `"${claim.value}" is already registered by ${holder}`;
  if (claim.kind === 'address') return `address ${claim.address} of job "${claim.job}" is already used by ${holder}`;
  return `is the node credential of ${holder} too`;
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
  const noneFixed = fixed.targetPaths.size === 0;
  const fixedHolder = (claim: Claim): string | undefined => {
    const hostname = claim.kind === 'host' ? claim.value : claim.kind === 'address' ? fixed.addresses.get(claim.value) : fixed.nodeCredentials.get(claim.value);
    return hostname === undefined ? undefined : fixed.targetPaths.get(hostname);
  };
  const sorted = [...candidates].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const byPath = new Map(sorted.map((c) => [c.path, c]));
  const index = new Map(sorted.map((c) => [c.path, 0]));
  const claimCache = new Map<Target, Claim[]>();
  const claimsFor = (target: Target, path: string): Claim[] => {
    const cached = claimCache.get(target);
    if (cached?.[0]!.path === path) return cached;
    const claims = claimsOf(options.settings, target, path);
    claimCache.set(target, claims);
    return claims;
  };

  // What each file's current version lost when it fell back, and to whom.
  const fell = new Map<string, Array<[Claim, string]>>();
  for (let round = 0; round <= sorted.length * 2 + 1; round++) {
    // Most keys have one claimant: only a second one makes a list.
    const first = new Map<string, Claim>();
    const shared = new Map<string, Claim[]>();
    for (const candidate of sorted) {
      const version = candidate.versions[index.get(candidate.path)!];
      if (!version) continue;
      for (const claim of claimsFor(version, candidate.path)) {
        const earlier = first.get(claim.key);
        if (!earlier) first.set(claim.key, claim);
        else shared.get(claim.key)?.push(claim) ?? shared.set(claim.key, [earlier, claim]);
      }
    }
    // Each file that lost a claim this round → the claims it lost, and to whom.
    const losers = new Map<string, Array<[Claim, string]>>();
    for (const [key, one] of first) {
      // A full build places against an empty catalog: only a key two files claim can clash.
      if (noneFixed && !shared.has(key)) continue;
      const holder = fixedHolder(one);
      const list = shared.get(key) ?? [one];
      if (!holder && list.length === 1) continue;
      const before = options.established(key);
      const winner = holder ?? (before !== undefined && list.some((c) => c.path === before) ? before : list[0]!.path);
      for (const claim of list) {
        if (claim.path === winner) continue;
        losers.get(claim.path)?.push([claim, winner]) ?? losers.set(claim.path, [[claim, winner]]);
      }
    }
    if (!losers.size) break;
    // A file that lost only to files which themselves fall back this round waits: once they
    // have gone it may hold the claim after all. (Else an established holder knocked out in
    // the round it knocked out a duplicate would leave the host name to nobody.) When every
    // loser waits on another, they beat each other in rings: each ring's file first by path
    // falls back, and the rest are decided again without it.
    const falling = [...losers].filter(([, lost]) => lost.some(([, winner]) => !losers.has(winner))).map(([path]) => path);
    for (const path of falling.length ? falling : ringMembers(losers)) {
      const lost = losers.get(path)!;
      const at = index.get(path)!;
      if (at === 0) fell.set(path, lost);
      index.set(path, at + 1);
    }
  }

  const accepted = new Map<string, Target>();
  const rejected = new Set<string>();
  for (const { path, versions } of sorted) {
    const version = versions[index.get(path)!];
    if (version) accepted.set(path, version);
    else rejected.add(path);
  }
  // Who holds the keys the fallen versions claim (most builds have none: no walk then).
  const holders = new Map<string, string>();
  if (fell.size) {
    const wanted = new Set([...fell.keys()].flatMap((path) => claimsFor(byPath.get(path)!.versions[0]!, path).map((c) => c.key)));
    for (const [path, version] of accepted) for (const claim of claimsFor(version, path)) if (wanted.has(claim.key)) holders.set(claim.key, path);
  }
  // A file whose current version fell back is told who holds its claims in the end, in the
  // order of its own claims: not who beat it in some round, which depends on how the change
  // came (in place, or by a full build). Only if nobody does (a holder fell back later) is
  // it told who beat it.
  const problems = new Map<string, Problem[]>();
  for (const [path, lost] of fell) {
    const current = claimsFor(byPath.get(path)!.versions[0]!, path);
    let clashes = current.flatMap((claim): Array<[Claim, string]> => {
      const holder = holders.get(claim.key) ?? fixedHolder(claim);
      return holder !== undefined && holder !== path ? [[claim, holder]] : [];
    });
    if (!clashes.length) clashes = current.flatMap((claim) => lost.filter(([c]) => c === claim));
    problems.set(path, clashes.map(([claim, holder]) => ({ file: path, field: claim.field, message: lostClaim(claim, holder) })));
  }
  return { accepted, problems, rejected };
}

/**
 * Losers that each lost only to other losers: following each one's first-by-path winner
 * leads into rings (every loser reaches one); each ring's file first by path falls. All
 * rings go in one round (a full build may meet hundreds), and the same losers give the
 * same answer, whatever order they were met in.
 */
function ringMembers(losers: Map<string, Array<[Claim, string]>>): string[] {
  const least = (paths: Iterable<string>) => [...paths].reduce((a, b) => (b < a ? b : a));
  const next = (path: string) => least(losers.get(path)!.map(([, winner]) => winner));
  const done = new Set<string>();
  const members: string[] = [];
  for (const start of [...losers.keys()].sort()) {
    const walk: string[] = [];
    const onWalk = new Set<string>();
    let at = start;
    while (!done.has(at) && !onWalk.has(at)) walk.push(at), onWalk.add(at), (at = next(at));
    // Came round to a file of this walk: the ring is the walk from there on.
    if (onWalk.has(at)) members.push(least(walk.slice(walk.indexOf(at))));
    for (const path of walk) done.add(path);
  }
  return members;
}
