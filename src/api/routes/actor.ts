import type { Context } from 'hono';
import type { Actor } from '../../inventory/actor.js';
import { clientAddress } from '../auth.js';

export const adminActor = (c: Context): Actor => ({ kind: 'admin', address: clientAddress(c) });
