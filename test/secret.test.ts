import { describe, expect, it } from 'vitest';
import { newApiCredential, newBootstrapToken, newSecretCredential, NODE_PREFIX, parseApiCredential, parseBootstrapToken, randomString, secretMatches } from '../src/tokens/secret.js';

describe('secrets', () => {
  it('are drawn evenly from their alphabet, never repeat, and keep their format across refills of the random pool', () => {
    // 400 × 40 characters, ~1.2 bytes each: well past the 4 KiB pool several times.
    const secrets = Array.from({ length: 400 }, () => randomString(40));
    expect(new Set(secrets).size).toBe(400);
    for (const secret of secrets) expect(secret).toMatch(/^[A-Za-z0-9]{40}$/);
    const counts = new Map<string, number>();
    for (const secret of secrets) for (const ch of secret) counts.set(ch, (counts.get(ch) ?? 0) + 1);
    expect(counts.size).toBe(62);
    // Chi-square over 62 letters (61 degrees of freedom): 130 is far past p = 1e-6; a modulo bias or a stuck byte lands there.
    const expected = (400 * 40) / 62;
    const chi = [...counts.values()].reduce((sum, n) => sum + (n - expected) ** 2 / expected, 0);
    expect(chi).toBeLessThan(130);
    expect(randomString(8, 'abc')).toMatch(/^[abc]{8}$/);
  });

  it('parse back to the id and secret they were made of, and match only their own hash', () => {
    const token = newBootstrapToken();
    const parsed = parseBootstrapToken(token.token)!;
    expect(parsed.id).toBe(token.id);
    expect(secretMatches(parsed.secret, token.secretHash)).toBe(true);
    const credential = newApiCredential();
    expect(parseApiCredential(credential.credential)?.id).toBe(credential.id);
    expect(secretMatches(parseApiCredential(credential.credential)!.secret, token.secretHash)).toBe(false);
    const node = newSecretCredential(NODE_PREFIX);
    expect(node.credential).toMatch(/^aami_node_[A-Za-z0-9]{40}$/);
    expect(secretMatches(node.credential, node.hash)).toBe(true);
  });
});
