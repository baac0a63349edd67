import type { Catalog } from '../catalog/build.js';
import { credentialPath } from '../catalog/parse.js';
import { AamiError } from '../errors.js';
import type { Writer } from '../writer/writer.js';
import type { Credential, CredentialCreate } from '../schema/index.js';
import { newApiCredential } from '../tokens/secret.js';
import { commitMeta, type Actor } from './actor.js';
import { credentialView } from './views.js';
import { renderYaml } from './yaml-file.js';

/**
 * Named API credentials live in the config repo (credentials/<id>.yaml, the hash only), so
 * every server of a remote setup knows them and `git log` shows who granted what. Only an
 * admin can create or revoke one through the API; whoever can merge into the config repo
 * can grant any role by pull request, which `aami diff` calls out.
 */
function credentialFileData(credential: Credential) {
  return {
    id: credential.id,
    name: credential.name,
    role: credential.role,
    secret_hash: credential.secret_hash,
    expires_at: credential.expires_at,
    revoked: credential.revoked || undefined,
    created_at: credential.created_at,
    created_by: credential.created_by,
  };
}

/** The served credential `id`; `present` tells a missing credential from one whose file is there but broken. */
export function requireCredential(catalog: Catalog, id: string, present?: (path: string) => boolean): Credential {
  const credential = catalog.apiCredentials.get(id);
  if (credential) return credential;
  if (present?.(credentialPath(id))) throw new AamiError('not_found', `credential "${id}" is not served: its file ${credentialPath(id)} is invalid, and it lets nobody in until it is fixed (its problems are in /api/v1/health)`, { credential_id: id });
  throw new AamiError('not_found', `credential "${id}" does not exist`, { credential_id: id });
}

export function listCredentials(catalog: Catalog, now: Date) {
  return [...catalog.apiCredentials.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.id < b.id ? -1 : 1)).map((c) => credentialView(c, now));
}

/** Create a credential; its secret is in the result once and nowhere else. */
export async function createCredential(writer: Writer, actor: Actor & { kind: 'credential' }, input: CredentialCreate, now: Date) {
  if (input.expires_at !== undefined && Date.parse(input.expires_at) <= now.getTime()) {
    throw new AamiError('validation_failed', 'expires_at must be in the future', [{ field: 'expires_at', message: 'must be in the future' }]);
  }
  const { id, credential: secret, secretHash } = newApiCredential();
  const { view } = await writer.update(commitMeta(actor, `Create ${input.role} credential ${id} for ${input.name}`), ({ catalog }) => {
    for (const other of catalog.apiCredentials.values()) {
      if (other.name === input.name && !other.revoked) {
        throw new AamiError('conflict', `an active credential named "${input.name}" exists (${other.id}): revoke it first, or choose another name`, { credential_id: other.id });
      }
    }
    const credential: Credential = {
      id,
      name: input.name,
      role: input.role,
      secret_hash: secretHash,
      expires_at: input.expires_at,
      revoked: false,
      created_at: now.toISOString(),
      created_by: actor.name,
    };
    return { changes: [{ path: credentialPath(id), content: renderYaml(credentialFileData(credential)) }], result: { view: credentialView(credential, now) } };
  });
  return { ...view, credential: secret };
}

export function revokeCredential(writer: Writer, actor: Actor, id: string, now: Date) {
  return writer.update(commitMeta(actor, `Revoke credential ${id}`), ({ catalog }, files) => {
    const credential = { ...requireCredential(catalog, id, (path) => files.present(path)), revoked: true };
    const path = credentialPath(id);
    return { changes: [{ path, content: renderYaml(credentialFileData(credential), files.text(path)) }], result: { credential: credentialView(credential, now) } };
  });
}
