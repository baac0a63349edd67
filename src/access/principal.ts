import type { Role, Token } from '../schema/index.js';

/**
 * Who a request is, once its secret is checked. Each kind has its own powers:
 * - credential: a named API credential with a role (or the break-glass admin);
 * - token: a bootstrap token, which can only enrol new hosts while it is active;
 * - node: a node credential, which acts on its own target only.
 */
export type Principal =
  | { kind: 'credential'; id: string; name: string; role: Role }
  | { kind: 'token'; token: Token }
  | { kind: 'node'; hostname: string }
  | { kind: 'anonymous' };

/** The break-glass admin (AAMI_ADMIN_TOKEN or the generated credential): not a named credential. */
export const BREAK_GLASS: Principal = { kind: 'credential', id: 'admin', name: 'admin', role: 'admin' };

const RANK: Record<Role, number> = { reader: 1, editor: 2, admin: 3 };

/** Whether a role includes another: admin ⊃ editor ⊃ reader. */
export function roleIncludes(role: Role, needed: Role): boolean {
  return RANK[role] >= RANK[needed];
}

export function describePrincipal(principal: Principal): string {
  switch (principal.kind) {
    case 'credential':
      return `credential "${principal.name}" (${principal.role})`;
    case 'token':
      return `bootstrap token ${principal.token.id}`;
    case 'node':
      return `the node credential of ${principal.hostname}`;
    case 'anonymous':
      return 'no credential';
  }
}
