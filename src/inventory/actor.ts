import type { Principal } from '../access/principal.js';
import type { WriteMeta } from '../repo/writer.js';

/**
 * Who asks for a change, as the commit will say it: a named credential's commits are
 * authored by its name, so `git log` says who did what.
 */
export type Actor =
  | { kind: 'credential'; id: string; name: string; address: string }
  | { kind: 'token'; tokenId: string; address: string }
  | { kind: 'node'; hostname: string; address: string }
  | { kind: 'server'; task: string };

export function actorOf(principal: Principal, address: string): Actor {
  switch (principal.kind) {
    case 'credential':
      return { kind: 'credential', id: principal.id, name: principal.name, address };
    case 'token':
      return { kind: 'token', tokenId: principal.token.id, address };
    case 'node':
      return { kind: 'node', hostname: principal.hostname, address };
    case 'anonymous':
      throw new Error('an anonymous request cannot change the config');
  }
}

export function commitMeta(actor: Actor, message: string): WriteMeta {
  switch (actor.kind) {
    case 'credential':
      return withAddress({ name: actor.name, email: actor.id === 'admin' ? 'admin@aami' : `${actor.id}@credentials.aami` }, message, actor.address);
    case 'token':
      return withAddress({ name: `token ${actor.tokenId}`, email: `${actor.tokenId}@tokens.aami` }, message, actor.address);
    case 'node':
      return withAddress({ name: `node ${actor.hostname}`, email: `${actor.hostname}@nodes.aami` }, message, actor.address);
    case 'server':
      return { author: { name: `aami ${actor.task}`, email: 'aami@localhost' }, message };
  }
}

function withAddress(author: WriteMeta['author'], message: string, address: string): WriteMeta {
  return { author, message, trailers: [['Source-Address', address]] };
}
