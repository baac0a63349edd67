import type { Settings, Target } from '../schema/index.js';
import { addressKeys, holdersOf, scrapedAtKey, targetAddresses } from './address.js';
import type { Catalog } from './build.js';
import { targetPath } from './parse.js';
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

/** The file a catalog's target comes from (the layout: parse.ts checks that its fields match its path). */
export function servedPath(catalog: Pick<Catalog, 'targets'>, hostname: string): string | undefined {
  const target = catalog.targets.get(hostname);
  return target && targetPath(target);
}

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

/**
 * Who held each claim in a catalog: its served targets, whose claims are keyed as `settings`
 * (the next build's aami.yaml) key them. When aami.yaml moves an exporter's port or job,
 * each served target holds its addresses under the new keys (looked up by the old ones,
 * nobody held them, and a newcomer could take a served target's address); where two served
 * targets move onto one address, the one already scraped there holds it, else the first by
 * path.
 */
export function establishedIn(catalog: Pick<Catalog, 'settings' | 'targets' | 'hostsByIp' | 'nodeCredentials'>, settings = catalog.settings): Established {
  const held: Established = (key) => {
    const [kind, value] = key.split('\u0000') as [string, string];
    const hostname = kind === 'host' ? value : kind === 'addr' ? scrapedAtKey(catalog, value) : catalog.nodeCredentials.get(value);
    return hostname === undefined ? undefined : servedPath(catalog, hostname);
  };
  if (addressRules(catalog.settings) === addressRules(settings)) return held;
  let moved: Map<string, string> | undefined;
  const movedAddresses = () => {
    const holders = new Map<string, string>();
    for (const target of catalog.targets.values()) {
      const path = targetPath(target);
      for (const key of addressKeys(settings, target)) {
        const claim = addressClaimKey(key);
        const other = holders.get(claim);
        if (other === undefined || (held(claim) !== other && (held(claim) === path || path < other))) holders.set(claim, path);
      }
    }
    return holders;
  };
  return (key) => {
    if (!key.startsWith(addressClaimKey(''))) return held(key);
    moved ??= movedAddresses();
    return moved.get(key);
  };
}

/** What decides a target's addresses in aami.yaml: each exporter type's job and port. */
function addressRules(settings: Settings): string {
  return Object.entries(settings.exporters)
    .map(([type, { job, port }]) => `${type} ${job} ${port}`)
    .sort()
    .join('\n');
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
 * its last good version, else contributes nothing. Rounds repeat until no claim is shared;
 * then a file that fell back takes its best version whose claims nobody holds. The files not
 * at their current version are placed again so, with the claims as they now stand as the
 * established ones, until a pass changes nothing: a restart (or the next build) decides
 * what this one decided. The full build and a registration's incremental change both place
 * targets here, so they decide every clash the same way.
 */
export function placeTargets(candidates: Candidate[], fixed: Fixed, options: { established: Established; settings: Settings }): Placement {
  const sorted = [...candidates].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const alone = aloneInTheirClaims(sorted, fixed, options.settings);
  const rest = sorted.filter((_, i) => !alone[i]);
  const contested = rest.length ? placeContested(rest, fixed, options) : undefined;
  const accepted = new Map<string, Target>();
  const rejected = new Set<string>();
  const problems = new Map<string, Problem[]>();
  sorted.forEach(({ path, versions }, i) => {
    const target = alone[i] ? versions[0] : contested!.accepted.get(path);
    if (target) accepted.set(path, target);
    else rejected.add(path);
    const found = alone[i] ? undefined : contested!.problems.get(path);
    if (found) problems.set(path, found);
  });
  return { accepted, problems, rejected };
}

type Fixed = Pick<Catalog, 'settings' | 'targets' | 'hostsByIp' | 'nodeCredentials'>;

/**
 * Which files (`sorted`, by index) make no claim, in any version, that is made twice (by
 * another file, or in another version of their own) or that a fixed target of another file
 * holds: such a file keeps its current version, and neither it nor its claims play any part
 * in deciding the others. A build without a clash (a restart, nearly every build) is all
 * such files, and placing them needs none of the claim records and maps placeContested
 * keeps (most of a 100k-target build's time when it placed them all). Two targets share an
 * address only on one IP address (an address key is its job, IP address and port), so the
 * addresses are looked at only on IP addresses claimed twice.
 */
function aloneInTheirClaims(sorted: Candidate[], fixed: Fixed, settings: Settings): boolean[] {
  const hosts = new Claimed();
  const ips = new Claimed();
  const credentials = new Claimed();
  const checkFixed = fixed.targets.size > 0;
  const alone = sorted.map(({ path, versions }) => {
    for (const target of versions) {
      hosts.add(target.hostname);
      ips.add(target.ip_address);
      if (target.node_credential_hash) credentials.add(target.node_credential_hash);
    }
    return !(checkFixed && versions.some((target) => heldByOther(fixed, settings, target, path)));
  });
  if (!hosts.again.size && !ips.again.size && !credentials.again.size) return alone;
  const onSharedIp = (target: Target) => ips.again.has(target.ip_address);
  const addresses = new Claimed();
  for (const { versions } of sorted) for (const target of versions) if (onSharedIp(target)) for (const key of addressKeys(settings, target)) addresses.add(key);
  const shares = (target: Target) =>
    hosts.again.has(target.hostname) ||
    (!!target.node_credential_hash && credentials.again.has(target.node_credential_hash)) ||
    (onSharedIp(target) && addressKeys(settings, target).some((key) => addresses.again.has(key)));
  return sorted.map(({ versions }, i) => alone[i]! && !versions.some(shares));
}

/** Whether a fixed target of another file holds one of a target's claims. */
function heldByOther(fixed: Fixed, settings: Settings, target: Target, path: string): boolean {
  const hash = target.node_credential_hash;
  const hostnames = [target.hostname, ...holdersOf(fixed, settings, target), hash ? fixed.nodeCredentials.get(hash) : undefined];
  return hostnames.some((hostname) => {
    const holder = hostname === undefined ? undefined : servedPath(fixed, hostname);
    return holder !== undefined && holder !== path;
  });
}

/** Values claimed, and those claimed more than once. */
class Claimed {
  private readonly seen = new Set<string>();
  readonly again = new Set<string>();

  add(value: string): void {
    const size = this.seen.size;
    this.seen.add(value);
    if (this.seen.size === size) this.again.add(value);
  }
}

/** placeTargets for the files that may contest a claim (by path). */
function placeContested(sorted: Candidate[], fixed: Fixed, options: { established: Established; settings: Settings }): Placement {
  const fixedHolder = (claim: Claim): string | undefined => {
    const hostname = claim.kind === 'host' ? claim.value : claim.kind === 'address' ? scrapedAtKey(fixed, claim.value) : fixed.nodeCredentials.get(claim.value);
    return hostname === undefined ? undefined : servedPath(fixed, hostname);
  };
  const byPath = new Map(sorted.map((c) => [c.path, c]));
  /** Which version each file is at (its versions' length: none). */
  const index = new Map<string, number>();
  const claimCache = new Map<Target, Claim[]>();
  const claimsFor = (target: Target, path: string): Claim[] => {
    const cached = claimCache.get(target);
    if (cached?.[0]!.path === path) return cached;
    const claims = claimsOf(options.settings, target, path);
    claimCache.set(target, claims);
    return claims;
  };
  const claimsAt = (path: string, at: number) => {
    const version = byPath.get(path)!.versions[at];
    return version ? claimsFor(version, path) : [];
  };

  /** Claim key → the file holding it (among the candidates, as they are placed so far). */
  let held = new Map<string, Claim>();
  const holderOf = (claim: Claim) => fixedHolder(claim) ?? held.get(claim.key)?.path;

  /** Claim key → the files one of whose versions below their first makes the claim (with which version). */
  const lowerOf = new Map<string, Array<{ path: string; at: number }>>();
  for (const { path, versions } of sorted) {
    versions.forEach((version, at) => {
      if (at > 0) for (const { key } of claimsFor(version, path)) lowerOf.get(key)?.push({ path, at }) ?? lowerOf.set(key, [{ path, at }]);
    });
  }
  /**
   * Whether a winner can lose nothing any more this round: no loser reaches it in atRisk's
   * sense. Searched backwards from the winner (a file that could take one of its claims by
   * falling back, and so on), so a round costs what lies around its winners, not a walk
   * from every loser: a chain of files falling back onto each other's claims cost a walk
   * down the whole chain each round.
   */
  const safeFrom = (losers: Map<string, string[]>, holderIn: (key: string) => string | undefined, established: Established, inPass: ReadonlySet<string>) => {
    const known = new Map<string, boolean>();
    return (winner: string): boolean => {
      const cached = known.get(winner);
      if (cached !== undefined) return cached;
      const seen = new Set([winner]);
      const queue = [winner];
      for (let i = 0; i < queue.length; i++) {
        const at = queue[i]!;
        if (losers.has(at) || known.get(at) === false) return known.set(winner, false), false;
        if (!index.has(at)) continue;
        for (const { key } of claimsAt(at, index.get(at)!)) {
          if (holderIn(key) !== at) continue;
          const before = established(key);
          for (const lower of lowerOf.get(key) ?? []) {
            if (seen.has(lower.path) || !inPass.has(lower.path) || lower.at <= index.get(lower.path)!) continue;
            if (before === lower.path || (before !== at && lower.path < at)) seen.add(lower.path), queue.push(lower.path);
          }
        }
      }
      for (const path of seen) known.set(path, true);
      return true;
    };
  };

  /** One pass: the files start at their current versions and fall back round by round. */
  const fallBack = (files: Candidate[], established: Established) => {
    const inPass = new Set(files.map(({ path }) => path));
    // Claim key → the files claiming it at their version now, by path. Kept as files fall
    // back, so a round looks only at the contested keys: a chain of files each falling back
    // onto the next one's claim takes a round a file, and a round over every claim of a
    // 100k-target build made a 2,000-file chain cost minutes.
    // One claimant is kept as itself, two or more as a list: most of a build's ~300k keys
    // have one, and a list each cost a tenth of a full build.
    const claimants = new Map<string, Claim | Claim[]>();
    const listOf = (key: string): Claim[] => {
      const slot = claimants.get(key);
      return slot === undefined ? [] : Array.isArray(slot) ? slot : [slot];
    };
    const contested = new Set<string>();
    const recheck = (key: string) => {
      const slot = claimants.get(key);
      const holder = slot === undefined || Array.isArray(slot) ? undefined : holderOf(slot);
      if (Array.isArray(slot) || (holder !== undefined && holder !== slot!.path)) contested.add(key);
      else contested.delete(key);
    };
    const enter = (path: string, at: number) => {
      for (const claim of claimsAt(path, at)) {
        const slot = claimants.get(claim.key);
        if (slot === undefined) claimants.set(claim.key, claim);
        else {
          const list = Array.isArray(slot) ? slot : [slot];
          const after = list.findIndex((c) => c.path > path);
          list.splice(after < 0 ? list.length : after, 0, claim);
          claimants.set(claim.key, list);
        }
        recheck(claim.key);
      }
    };
    const leave = (path: string, at: number) => {
      for (const { key } of claimsAt(path, at)) {
        const list = listOf(key).filter((c) => c.path !== path);
        if (list.length > 1) claimants.set(key, list);
        else if (list.length === 1) claimants.set(key, list[0]!);
        else claimants.delete(key);
        recheck(key);
      }
    };
    for (const { path } of files) index.set(path, 0), enter(path, 0);
    for (;;) {
      // Each file that lost a claim this round → the files that beat it.
      const losers = new Map<string, string[]>();
      const winners = new Map<string, string>();
      for (const key of contested) {
        const list = listOf(key);
        const holder = holderOf(list[0]!);
        const before = established(key);
        const winner = holder ?? (before !== undefined && list.some((c) => c.path === before) ? before : list[0]!.path);
        if (!holder) winners.set(key, winner);
        for (const { path } of list) if (path !== winner) losers.get(path)?.push(winner) ?? losers.set(path, [winner]);
      }
      // Nothing contested: every key has one claimant.
      if (!losers.size) return claimants as Map<string, Claim>;
      // A file falls back only when it lost to one that can lose nothing any more: else the
      // winner may yet fall back too, and the claim be free after all (a host name would go
      // to nobody). When every loser waits on another, they beat each other in rings: each
      // ring's file first by path falls back, and the rest are decided again without it.
      const holderIn = (key: string) => winners.get(key) ?? listOf(key)[0]?.path;
      const safe = safeFrom(losers, holderIn, established, inPass);
      const falling = [...losers].filter(([, beaten]) => beaten.some(safe)).map(([path]) => path);
      const waits = () => {
        const lowerClaims = (path: string) => byPath.get(path)!.versions.slice(index.get(path)! + 1).flatMap((v) => claimsFor(v, path));
        const risk = atRisk(losers, lowerClaims, holderIn, established);
        return new Map([...losers].map(([path, beaten]) => [path, beaten.map((winner) => risk.get(winner)!)]));
      };
      for (const path of falling.length ? falling : ringMembers(waits())) {
        const at = index.get(path)!;
        leave(path, at);
        index.set(path, at + 1);
        enter(path, at + 1);
      }
    }
  };

  /** A file that fell back takes its best version whose claims nobody holds (by path, again while any moves). */
  const takeFree = (files: Candidate[]) => {
    for (let moved = true; moved; ) {
      moved = false;
      for (const { path } of files) {
        const at = index.get(path)!;
        let better = 0;
        while (better < at && !claimsAt(path, better).every((claim) => [undefined, path].includes(holderOf(claim)))) better++;
        if (better === at) continue;
        for (const claim of claimsAt(path, at)) held.delete(claim.key);
        for (const claim of claimsAt(path, better)) held.set(claim.key, claim);
        index.set(path, better);
        moved = true;
      }
    }
  };

  // The first pass with the holders before this change; each next one over the files still
  // not at their current version, with the holders the pass before ended with. Those at their
  // current version keep it (they hold each of its claims now), and no file ends a pass worse
  // off than the pass before (it holds every claim of the version it had): this ends.
  let files = sorted;
  let established = options.established;
  let was: Map<string, number> | undefined;
  for (;;) {
    const placed = fallBack(files, established);
    if (was) for (const [key, claim] of placed) held.set(key, claim);
    else held = placed;
    const fallen = files.filter(({ path }) => index.get(path)! > 0);
    takeFree(fallen);
    const rest = fallen.filter(({ path }) => index.get(path)! > 0);
    if (!rest.length || (was && files.every(({ path }) => index.get(path) === was!.get(path)))) break;
    const holders = new Map<string, string>();
    for (const { path } of rest) for (const claim of claimsAt(path, index.get(path)!)) holders.set(claim.key, path), held.delete(claim.key);
    established = (key) => holders.get(key);
    was = new Map(rest.map(({ path }) => [path, index.get(path)!]));
    files = rest;
  }

  const accepted = new Map<string, Target>();
  const rejected = new Set<string>();
  const problems = new Map<string, Problem[]>();
  for (const { path, versions } of sorted) {
    const at = index.get(path)!;
    if (versions[at]) accepted.set(path, versions[at]);
    else rejected.add(path);
    // A file not at its current version is told who holds each claim of it in the end (one
    // at least: else it would have taken it), in the order of its own claims: what the
    // placement ended in, however it got there (in place, by a full build, after a restart).
    if (at === 0) continue;
    const clashes = claimsAt(path, 0).flatMap((claim) => {
      const holder = holderOf(claim);
      return holder !== undefined && holder !== path ? [{ file: path, field: claim.field, message: lostClaim(claim, holder) }] : [];
    });
    problems.set(path, clashes);
  }
  return { accepted, problems, rejected };
}

/**
 * The files that may still lose a claim → the loser whose falling back may cost them one:
 * the losers themselves, and each file holding a claim that one of them would win by
 * falling back (it held the claim before, or comes first by path where the holder did not),
 * and so on.
 */
function atRisk(losers: Map<string, string[]>, lowerClaims: (path: string) => Claim[], holderOf: (key: string) => string | undefined, established: Established): Map<string, string> {
  const risk = new Map<string, string>();
  const queue = [...losers.keys()].sort();
  for (const path of queue) risk.set(path, path);
  for (let i = 0; i < queue.length; i++) {
    const path = queue[i]!;
    for (const { key } of lowerClaims(path)) {
      const holder = holderOf(key);
      if (holder === undefined || risk.has(holder)) continue;
      const before = established(key);
      if (before === path || (before !== holder && path < holder)) risk.set(holder, risk.get(path)!), queue.push(holder);
    }
  }
  return risk;
}

/**
 * Losers that each wait on other losers: following each one's first by path leads into
 * rings (every loser reaches one); each ring's file first by path falls. All
 * rings go in one round (a full build may meet hundreds), and the same losers give the
 * same answer, whatever order they were met in.
 */
function ringMembers(waits: Map<string, string[]>): string[] {
  const least = (paths: Iterable<string>) => [...paths].reduce((a, b) => (b < a ? b : a));
  const next = (path: string) => least(waits.get(path)!);
  const done = new Set<string>();
  const members: string[] = [];
  for (const start of [...waits.keys()].sort()) {
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
