import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

const ALPHABET = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';

/** Random characters from [a-zA-Z0-9] (or lowercase + digits), without modulo bias. */
export function randomString(length: number, alphabet = ALPHABET): string {
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 256 - (256 % alphabet.length)) out += alphabet[byte % alphabet.length];
      if (out.length === length) break;
    }
  }
  return out;
}

/** Secrets are 32+ random characters (~190 bits): a fast hash is enough, no salt or KDF needed. */
export function hashSecret(secret: string): string {
  return `sha256:${createHash('sha256').update(secret).digest('hex')}`;
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
/** Admin credential generated on first start: `aami_admin_<secret>`. */
export const ADMIN_PREFIX = 'aami_admin_';

export function newBootstrapToken(): { id: string; token: string; secretHash: string } {
  const id = randomString(8, 'abcdefghijklmnopqrstuvwxyz0123456789');
  const secret = randomString(40);
  return { id, token: `${BOOTSTRAP_PREFIX}${id}_${secret}`, secretHash: hashSecret(secret) };
}

export function parseBootstrapToken(token: string): { id: string; secret: string } | undefined {
  const match = /^aami_bootstrap_([a-z0-9]{8})_([A-Za-z0-9]{40})$/.exec(token);
  return match ? { id: match[1]!, secret: match[2]! } : undefined;
}

export function newSecretCredential(prefix: string): { credential: string; hash: string } {
  const credential = `${prefix}${randomString(40)}`;
  return { credential, hash: hashSecret(credential) };
}
