import { createHash, hash, randomFillSync, timingSafeEqual } from 'node:crypto';

const ALPHABET = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';

/**
 * Random bytes drawn from a pool refilled 4 KiB at a time: one call into the CSPRNG a
 * registration cost ~0.1 ms under load (Node pools randomUUID's entropy the same way). Each
 * byte is handed out once.
 */
const pool = Buffer.alloc(4096);
let taken = pool.length;
function randomByte(): number {
  if (taken === pool.length) randomFillSync(pool), (taken = 0);
  return pool[taken++]!;
}

/** Random characters from [a-zA-Z0-9] (or lowercase + digits), without modulo bias. */
export function randomString(length: number, alphabet = ALPHABET): string {
  const limit = 256 - (256 % alphabet.length);
  let out = '';
  while (out.length < length) {
    const byte = randomByte();
    if (byte < limit) out += alphabet[byte % alphabet.length];
  }
  return out;
}

/** Secrets are 32+ random characters (~190 bits): a fast hash is enough, no salt or KDF needed. */
export function hashSecret(secret: string): string {
  return `sha256:${hash('sha256', secret, 'hex')}`;
}

/** Compare a presented secret with a stored hash in constant time. */
export function secretMatches(secret: string, storedHash: string): boolean {
  const presented = Buffer.from(hashSecret(secret));
  const stored = Buffer.from(storedHash);
  return presented.length === stored.length && timingSafeEqual(presented, stored);
}

/** Bootstrap token: `aami_bootstrap_<id>_<secret>`; the id is public (file name, URLs, commits). */
export const BOOTSTRAP_PREFIX = 'aami_bootstrap_';
/** Node credential, issued at registration: `aami_node_<secret>`. */
export const NODE_PREFIX = 'aami_node_';
/** Break-glass admin credential generated on first start: `aami_admin_<secret>`. */
export const ADMIN_PREFIX = 'aami_admin_';
/** Named API credential: `aami_cred_<id>_<secret>`; the id is public (file name, commits). */
export const CREDENTIAL_PREFIX = 'aami_cred_';

/** A secret with a public id in front, so the server finds its hash without trying every one. */
function newIdentifiedSecret(prefix: string): { id: string; secret: string; full: string; secretHash: string } {
  const id = randomString(8, 'abcdefghijklmnopqrstuvwxyz0123456789');
  const secret = randomString(40);
  return { id, secret, full: `${prefix}${id}_${secret}`, secretHash: hashSecret(secret) };
}

function parseIdentifiedSecret(prefix: string, presented: string): { id: string; secret: string } | undefined {
  if (!presented.startsWith(prefix)) return undefined;
  const match = /^([a-z0-9]{8})_([A-Za-z0-9]{40})$/.exec(presented.slice(prefix.length));
  return match ? { id: match[1]!, secret: match[2]! } : undefined;
}

export function newBootstrapToken(): { id: string; token: string; secretHash: string } {
  const { id, full, secretHash } = newIdentifiedSecret(BOOTSTRAP_PREFIX);
  return { id, token: full, secretHash };
}

export function parseBootstrapToken(token: string): { id: string; secret: string } | undefined {
  return parseIdentifiedSecret(BOOTSTRAP_PREFIX, token);
}

export function newApiCredential(): { id: string; credential: string; secretHash: string } {
  const { id, full, secretHash } = newIdentifiedSecret(CREDENTIAL_PREFIX);
  return { id, credential: full, secretHash };
}

export function parseApiCredential(presented: string): { id: string; secret: string } | undefined {
  return parseIdentifiedSecret(CREDENTIAL_PREFIX, presented);
}

/**
 * Compare two secrets of any length and byte content in constant time: both are hashed
 * first, so unequal lengths neither throw (timingSafeEqual would) nor answer early.
 */
export function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());
}

export function newSecretCredential(prefix: string): { credential: string; hash: string } {
  const credential = `${prefix}${randomString(40)}`;
  return { credential, hash: hashSecret(credential) };
}
