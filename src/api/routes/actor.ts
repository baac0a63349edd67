import type { Context } from 'hono';
import { actorOf, type Actor } from '../../inventory/actor.js';
import type { Role } from '../../schema/index.js';
import { authorize, clientAddress, type AuthDeps } from '../auth.js';

/** Authorize a write for `role` and name its author: the credential the request carries. */
export function writerActor(c: Context, deps: AuthDeps, role: Role = 'editor'): Actor & { kind: 'credential' } {
  return actorOf(authorize(c, deps, role), clientAddress(c)) as Actor & { kind: 'credential' };
}
