import { ErrorBox } from './layout.js';

/**
 * The sign-in form. The credential travels once, in this POST's body; the server answers
 * with a session cookie and never puts the credential in a page, a URL or a log.
 */
export function SignInView({ message }: { message?: string }) {
  return (
    <section class="narrow">
      <h1>Sign in</h1>
      <p>Paste a named credential (aami_cred_…) or the break-glass admin credential.</p>
      <ErrorBox message={message} />
      <form method="post" action="/console/sign-in">
        <label>
          Credential
          <input type="password" name="credential" required autocomplete="current-password" autofocus />
        </label>
        <button type="submit">Sign in</button>
      </form>
    </section>
  );
}
