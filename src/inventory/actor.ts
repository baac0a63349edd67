import type { WriteMeta } from '../repo/writer.js';

/** Who asks for a change, as the commit will say it. */
export type Actor = { kind: 'admin'; address: string } | { kind: 'token'; tokenId: string; address: string };

export function commitMeta(actor: Actor, message: string): WriteMeta {
  const author =
    actor.kind === 'admin' ? { name: 'admin', email: 'admin@aami' } : { name: `token ${actor.tokenId}`, email: `${actor.tokenId}@tokens.aami` };
  return { message, author, trailers: [['Source-Address', actor.address]] };
}
