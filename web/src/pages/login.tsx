// Log in, or create an account and log in.
import { useState } from "preact/hooks";
import { describe } from "../api";
import { login, register, type Session } from "../session";
import { ErrorLine } from "../app";

export function Login({ notice, onSignedIn }: { notice: string | null; onSignedIn: (s: Session) => void }) {
  const [creating, setCreating] = useState(false);
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: Event) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      if (creating) await register(username.trim(), password);
      onSignedIn(await login(username.trim(), password));
    } catch (err) {
      setError(describe(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <main id="main" class="login">
      <h1>
        <span class="logo" aria-hidden="true" /> Presence gateway
      </h1>
      <p class="lead">Change your avatar, signature and mood once; every network you bind follows.</p>
      {notice && (
        <p class="notice" role="status">
          {notice}
        </p>
      )}
      <form onSubmit={submit} class="card" aria-labelledby="login-title">
        <h2 id="login-title">{creating ? "Create an account" : "Log in"}</h2>
        <label for="username">User name</label>
        <input
          id="username"
          name="username"
          autocomplete="username"
          required
          minLength={3}
          maxLength={64}
          pattern="[a-z0-9._\-]+"
          title="3-64 characters: lowercase letters, digits, dot, underscore, hyphen"
          value={username}
          onInput={(e) => setUsername(e.currentTarget.value)}
        />
        {creating && <p class="hint">3-64 characters: lowercase letters, digits, “.”, “_”, “-”.</p>}
        <label for="password">Password</label>
        <input
          id="password"
          name="password"
          type="password"
          autocomplete={creating ? "new-password" : "current-password"}
          required
          minLength={creating ? 8 : undefined}
          value={password}
          onInput={(e) => setPassword(e.currentTarget.value)}
        />
        {creating && <p class="hint">At least 8 characters.</p>}
        <ErrorLine error={error} />
        <button type="submit" disabled={busy}>
          {busy ? "Please wait…" : creating ? "Create account" : "Log in"}
        </button>
        <p>
          {creating ? "Have an account? " : "New here? "}
          <button
            type="button"
            class="link"
            onClick={() => {
              setCreating(!creating);
              setError(null);
            }}
          >
            {creating ? "Log in" : "Create an account"}
          </button>
        </p>
      </form>
    </main>
  );
}
