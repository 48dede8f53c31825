// The supported networks and the user's accounts on them (bindings): bind
// with the connector's own credential check, unbind.
import { useEffect, useState } from "preact/hooks";
import { describe, type Binding, type CredentialField, type Module } from "../api";
import { ErrorLine, When, useCtx } from "../app";
import { limitsLine } from "../limits";

export function useBindings(): [Binding[] | null, () => void, string | null] {
  const { api } = useCtx();
  const [bindings, setBindings] = useState<Binding[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [version, setVersion] = useState(0);
  useEffect(() => {
    api.get<{ bindings: Binding[] }>("/v1/bindings").then(
      (r) => {
        setBindings(r.bindings);
        setError(null);
      },
      (e) => setError(describe(e)),
    );
  }, [api, version]);
  return [bindings, () => setVersion((v) => v + 1), error];
}

export function NetworksPage() {
  const { api, modules } = useCtx();
  const [bindings, reload, loadError] = useBindings();
  const [chosen, setChosen] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const nameOf = (id: string) => modules.find((m) => m.id === id)?.name ?? id;

  async function unbind(b: Binding) {
    if (!confirm(`Unbind ${b.account} on ${nameOf(b.module)}? The gateway forgets its credentials.`)) return;
    setError(null);
    try {
      await api.request("DELETE", `/v1/bindings/${encodeURIComponent(b.id)}`);
      reload();
    } catch (e) {
      setError(describe(e));
    }
  }

  return (
    <>
      <h1>Networks</h1>
      <section aria-labelledby="accounts-title">
        <h2 id="accounts-title">Your accounts</h2>
        <ErrorLine error={loadError ?? error} />
        {bindings && bindings.length === 0 && <p>No account bound yet. Pick a network below.</p>}
        {bindings && bindings.length > 0 && (
          <ul class="rows" data-testid="bindings">
            {bindings.map((b) => (
              <li key={b.id} class="row">
                <div>
                  <strong>{nameOf(b.module)}</strong> <span class="account">{b.account}</span>
                  <div class="hint">
                    bound <When at={b.created_at} />
                    {b.last_applied ? ` · last applied: ${summary(b.last_applied)}` : " · nothing applied yet"}
                  </div>
                </div>
                <button type="button" class="secondary" onClick={() => unbind(b)} aria-label={`Unbind ${b.account} on ${nameOf(b.module)}`}>
                  Unbind
                </button>
              </li>
            ))}
          </ul>
        )}
      </section>
      <section aria-labelledby="networks-title">
        <h2 id="networks-title">Supported networks</h2>
        {modules.length === 0 && <p>This gateway offers no network yet: its operator adds them.</p>}
        <ul class="cards">
          {modules.map((m) => (
            <li key={m.id} class="card">
              <h3>{m.name}</h3>
              <p class="hint">{limitsLine(m)}</p>
              {chosen === m.id ? (
                <BindForm
                  module={m}
                  onDone={() => {
                    setChosen(null);
                    reload();
                  }}
                  onCancel={() => setChosen(null)}
                />
              ) : (
                <button type="button" onClick={() => setChosen(m.id)} aria-label={`Bind a ${m.name} account`}>
                  Bind an account
                </button>
              )}
            </li>
          ))}
        </ul>
      </section>
    </>
  );
}

function summary(s: object): string {
  return Object.entries(s)
    .map(([k, v]) => (k === "avatar" ? "avatar" : `${k} “${String(v)}”`))
    .join(", ");
}

function BindForm({ module, onDone, onCancel }: { module: Module; onDone: () => void; onCancel: () => void }) {
  const { api } = useCtx();
  const [account, setAccount] = useState("");
  const [values, setValues] = useState<Record<string, string | boolean>>({});
  const [raw, setRaw] = useState("{}");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const fields = module.credentials;
  const idFor = (f: string) => `bind-${module.id}-${f}`;

  async function submit(e: Event) {
    e.preventDefault();
    setError(null);
    let credentials: Record<string, unknown>;
    try {
      credentials = fields ? credentialsOf(fields, values) : JSON.parse(raw);
    } catch (err) {
      setError(err instanceof SyntaxError ? `The credentials are not JSON: ${err.message}` : describe(err));
      return;
    }
    setBusy(true);
    try {
      await api.json("POST", "/v1/bindings", { module: module.id, account: account.trim(), credentials });
      onDone();
    } catch (err) {
      setError(describe(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <form onSubmit={submit} class="bind" aria-label={`Bind a ${module.name} account`}>
      <label for={idFor("account")}>Account</label>
      <input
        id={idFor("account")}
        required
        maxLength={320}
        value={account}
        autocomplete="off"
        onInput={(e) => setAccount(e.currentTarget.value)}
      />
      {fields ? (
        fields.map((f) => (
          <div key={f.name}>
            {f.kind === "boolean" ? (
              <label class="check">
                <input
                  type="checkbox"
                  checked={values[f.name] === true}
                  onChange={(e) => setValues({ ...values, [f.name]: e.currentTarget.checked })}
                />
                {f.label}
              </label>
            ) : (
              <>
                <label for={idFor(f.name)}>
                  {f.label}
                  {f.required ? "" : " (optional)"}
                </label>
                <input
                  id={idFor(f.name)}
                  type={(f.secret ? "password" : f.kind === "url" ? "url" : f.kind === "integer" ? "number" : "text") as "text"}
                  required={f.required}
                  autocomplete={f.secret ? "new-password" : "off"}
                  value={(values[f.name] as string) ?? ""}
                  onInput={(e) => setValues({ ...values, [f.name]: e.currentTarget.value })}
                />
              </>
            )}
            {f.help && <p class="hint">{f.help}</p>}
          </div>
        ))
      ) : (
        <>
          <label for={idFor("raw")}>Credentials (JSON object)</label>
          <textarea id={idFor("raw")} rows={3} value={raw} onInput={(e) => setRaw(e.currentTarget.value)} />
          <p class="hint">This network takes whatever its receiver checks, as a JSON object.</p>
        </>
      )}
      <ErrorLine error={error} />
      <div class="actions">
        <button type="submit" disabled={busy}>
          {busy ? `Checking with ${module.name}…` : "Bind"}
        </button>
        <button type="button" class="secondary" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function credentialsOf(fields: CredentialField[], values: Record<string, string | boolean>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of fields) {
    const v = values[f.name];
    if (f.kind === "boolean") {
      if (v !== undefined) out[f.name] = v === true;
    } else if (typeof v === "string" && v !== "") {
      out[f.name] = f.kind === "integer" ? Number(v) : v;
    }
  }
  return out;
}
