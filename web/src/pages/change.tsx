// Change once: signature, mood and avatar, told per network before sending
// what will be cut or converted; then each network's delivery, live from the
// change's event stream; and the history of recent changes.
import type { ComponentChildren } from "preact";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { ApiError, describe, type Change, type Module, type Target } from "../api";
import { ErrorLine, When, useCtx } from "../app";
import { avatarPlan, limitsLine, size, textPlan, type ImageFacts } from "../limits";
import { useBindings } from "./networks";

const MEDIA_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"];
const MAX_MEDIA_BYTES = 8 * 1024 * 1024;

export function ChangePage() {
  const [shown, setShown] = useState<string | null>(null);
  const [historyVersion, setHistoryVersion] = useState(0);
  return (
    <>
      <h1>Change once</h1>
      <ChangeForm
        onSent={(id) => {
          setShown(id);
          setHistoryVersion((v) => v + 1);
        }}
      />
      {shown && <Delivery key={shown} id={shown} onFinal={() => setHistoryVersion((v) => v + 1)} />}
      <History version={historyVersion} shown={shown} onShow={setShown} />
    </>
  );
}

function ChangeForm({ onSent }: { onSent: (id: string) => void }) {
  const { api, modules } = useCtx();
  const [bindings, , bindingsError] = useBindings();
  const [signature, setSignature] = useState("");
  const [mood, setMood] = useState("");
  const [file, setFile] = useState<File | null>(null);
  const [facts, setFacts] = useState<ImageFacts | null>(null);
  const [preview, setPreview] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const avatarInput = useRef<HTMLInputElement>(null);
  const loaded = useRef(false);

  // What was sent last: it fills the form once, and only fields that
  // differ from it are sent (a change, not a copy of the whole profile).
  const [profile, setProfile] = useState<{ signature?: string; mood?: string }>({});
  useEffect(() => {
    if (loaded.current) return;
    loaded.current = true;
    api.get<{ settings: { signature?: string; mood?: string } }>("/v1/profile").then(
      (p) => {
        setProfile(p.settings);
        setSignature((s) => s || p.settings.signature || "");
        setMood((m) => m || p.settings.mood || "");
      },
      (e) => setError(`Your last settings could not be read: ${describe(e)}`),
    );
  }, [api]);

  useEffect(() => () => void (preview && URL.revokeObjectURL(preview)), [preview]);

  // The networks the change goes to: the modules of the user's bindings.
  const targets: Module[] = useMemo(() => {
    const ids = new Set((bindings ?? []).map((b) => b.module));
    return modules.filter((m) => ids.has(m.id));
  }, [bindings, modules]);

  // Two quick picks: only the last one's facts and preview count.
  const picks = useRef(0);
  async function choose(f: File | null) {
    const pick = ++picks.current;
    setError(null);
    setFacts(null);
    setPreview(null);
    setFile(f);
    if (!f) return;
    if (!MEDIA_TYPES.includes(f.type)) {
      setError(`${f.name} is ${f.type || "of an unknown type"}: choose a PNG, JPEG, GIF or WebP image.`);
      return;
    }
    if (f.size > MAX_MEDIA_BYTES) {
      setError(`${f.name} is ${size(f.size)}: the gateway takes images up to ${size(MAX_MEDIA_BYTES)}.`);
      return;
    }
    try {
      const bitmap = await createImageBitmap(f);
      if (pick !== picks.current) return bitmap.close();
      setFacts({ type: f.type, bytes: f.size, width: bitmap.width, height: bitmap.height });
      bitmap.close();
      setPreview(URL.createObjectURL(f));
    } catch {
      if (pick === picks.current) setError(`${f.name} does not open as an image.`);
    }
  }

  async function submit(e: Event) {
    e.preventDefault();
    setError(null);
    const source = bindings?.[0];
    if (!source) {
      setError("Bind an account first (Networks): a change goes to the networks you bound.");
      return;
    }
    const settings: Record<string, string> = {};
    if (signature !== (profile.signature ?? "")) settings.signature = signature;
    if (mood !== (profile.mood ?? "")) settings.mood = mood;
    if (file && !facts) {
      setError("The chosen image cannot be sent: choose another one or clear it.");
      return;
    }
    setBusy(true);
    try {
      if (file) {
        const media = await api.json<{ id: string }>("POST", "/v1/media", file, { "content-type": file.type });
        settings.avatar = media.id;
      }
      if (Object.keys(settings).length === 0) {
        setError("Nothing changed: edit the signature or the mood, or choose an avatar.");
        return;
      }
      // Said to come from a local client: every bound account is pushed,
      // the first one included. The key makes a retried click harmless.
      const receipt = await api.json<Change>(
        "POST",
        "/v1/changes",
        { module: source.module, account: source.account, settings, from_local_client: true },
        { "idempotency-key": crypto.randomUUID() },
      );
      setProfile((p) => ({ ...p, ...settings }));
      // The avatar went with this change; the next one sends it only if
      // chosen again.
      setFile(null);
      setFacts(null);
      setPreview(null);
      if (avatarInput.current) avatarInput.current.value = "";
      onSent(receipt.id);
    } catch (err) {
      setError(describe(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <form class="card change" onSubmit={submit} aria-labelledby="change-title">
      <h2 id="change-title">Your settings</h2>
      <ErrorLine error={bindingsError && `Your accounts could not be read: ${bindingsError}`} />
      {bindings && bindings.length === 0 && (
        <p class="notice">
          No account bound yet: <a href="#/networks">bind one under Networks</a>.
        </p>
      )}
      {targets.length > 0 && (
        <ul class="plans" aria-label="Where a change goes, with each network's limits" data-testid="limits">
          {targets.map((m) => (
            <li key={m.id}>
              <strong>{m.name}</strong>: {limitsLine(m)}
            </li>
          ))}
        </ul>
      )}
      <label for="signature">Signature</label>
      <textarea id="signature" rows={2} maxLength={4096} value={signature} onInput={(e) => setSignature(e.currentTarget.value)} />
      <Plans targets={targets} plan={(m) => textPlan(m, "signature", signature)} label="signature" />
      <label for="mood">Mood</label>
      <input id="mood" maxLength={4096} value={mood} onInput={(e) => setMood(e.currentTarget.value)} />
      <Plans targets={targets} plan={(m) => textPlan(m, "mood", mood)} label="mood" />
      <label for="avatar">Avatar</label>
      <input
        id="avatar"
        ref={avatarInput}
        type="file"
        accept={MEDIA_TYPES.join(",")}
        onChange={(e) => choose(e.currentTarget.files?.[0] ?? null)}
      />
      {facts && preview && (
        <div class="avatar-preview">
          <img src={preview} alt="The chosen avatar" width={96} height={96} />
          <div>
            <p class="hint" data-testid="avatar-facts">
              {facts.width}×{facts.height}, {size(facts.bytes)}, {facts.type.replace("image/", "").toUpperCase()}
            </p>
            <ul class="plans" aria-label="What each network does with this avatar" data-testid="avatar-plans">
              {targets.map((m) => {
                const plan = avatarPlan(m, facts);
                return (
                  <li key={m.id} data-module={m.id} class={plan.fits ? "fits" : "converted"}>
                    <strong>{m.name}</strong>: {plan.notes.join("; ")}
                  </li>
                );
              })}
            </ul>
          </div>
        </div>
      )}
      <ErrorLine error={error} />
      <button type="submit" disabled={busy}>
        {busy ? "Sending…" : "Send to every network"}
      </button>
    </form>
  );
}

function Plans({ targets, plan, label }: { targets: Module[]; plan: (m: Module) => string | null; label: string }) {
  const notes = targets.map((m) => [m, plan(m)] as const).filter(([, p]) => p);
  if (notes.length === 0) return null;
  return (
    <ul class="plans" aria-label={`What each network does with this ${label}`}>
      {notes.map(([m, p]) => (
        <li key={m.id} data-module={m.id} class="converted">
          <strong>{m.name}</strong>: {p}
        </li>
      ))}
    </ul>
  );
}

const LABELS: Record<string, string> = {
  pending: "pending",
  delivering: "delivering",
  delivered: "delivered",
  retrying: "retrying",
  failed: "failed",
  superseded: "superseded",
  partial: "partly delivered",
  suppressed: "nothing to deliver",
};

/** One change's targets, followed live until every one is final. */
function Delivery({ id, onFinal }: { id: string; onFinal: () => void }) {
  const { api, modules } = useCtx();
  const [change, setChange] = useState<Change | null>(null);
  const [targets, setTargets] = useState<Record<string, Target>>({});
  const [status, setStatus] = useState<string>("pending");
  const [note, setNote] = useState<string | null>(null);

  useEffect(() => {
    const abort = new AbortController();
    let final = false;
    (async () => {
      let pause = 1000;
      while (!abort.signal.aborted && !final) {
        try {
          const c = await api.get<Change>(`/v1/changes/${encodeURIComponent(id)}`);
          setChange(c);
          setStatus(c.status);
          setTargets(Object.fromEntries(c.targets.map((t) => [t.binding_id, t])));
          if (c.status !== "pending") {
            final = true;
            break;
          }
          setNote(null);
          await api.stream(
            `/v1/changes/${encodeURIComponent(id)}/events`,
            (m) => {
              const data = JSON.parse(m.data);
              if (m.event === "target") setTargets((ts) => ({ ...ts, [data.binding_id]: data }));
              else if (m.event === "done") {
                final = true;
                setStatus(data.status);
              } else if (m.event === "error") setNote(`The live view stopped: ${data.message}`);
            },
            abort.signal,
          );
          pause = 1000;
        } catch (e) {
          // Gone, or no longer ours to see (signed out): trying again
          // cannot help.
          if (e instanceof ApiError && e.status >= 400 && e.status < 500) {
            setNote(`The live view stopped: ${describe(e)}`);
            return;
          }
          setNote(`Reconnecting: ${describe(e)}`);
        }
        if (!final && !abort.signal.aborted) {
          await new Promise((r) => setTimeout(r, pause));
          pause = Math.min(pause * 2, 30_000);
        }
      }
      if (final) {
        setNote(null);
        onFinal();
      }
    })();
    return () => abort.abort();
  }, [api, id]);

  const nameOf = (m: string) => modules.find((x) => x.id === m)?.name ?? m;
  const rows = Object.values(targets);
  return (
    <section class="card" aria-labelledby="delivery-title" data-testid="delivery">
      <h2 id="delivery-title">
        Delivery{" "}
        <span class={`badge ${status}`} data-testid="change-status">
          {LABELS[status] ?? status}
        </span>
      </h2>
      {change?.created_at && (
        <p class="hint">
          Sent <When at={change.created_at} />: {change.settings ? settingsLine(change.settings) : ""}
        </p>
      )}
      {status === "suppressed" && <p>Every network already holds these settings: nothing was sent.</p>}
      {note && (
        <p class="notice" role="status">
          {note}
        </p>
      )}
      <table class="targets" aria-live="polite">
        <caption class="sr-only">Where this change stands on each network</caption>
        <thead>
          <tr>
            <th scope="col">Network</th>
            <th scope="col">Status</th>
            <th scope="col">Details</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((t) => (
            <tr key={t.binding_id} data-module={t.module} data-testid={`target-${t.module}`}>
              <th scope="row">
                {nameOf(t.module)}
                <div class="account">{t.account}</div>
              </th>
              <td>
                <span class={`badge ${t.status}`} data-testid="target-status">
                  {LABELS[t.status] ?? t.status}
                </span>
              </td>
              <td class="details">{details(t)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function details(t: Target) {
  const parts: ComponentChildren[] = [];
  if (t.applied_fields?.length) parts.push(<span>applied: {t.applied_fields.join(", ")}</span>);
  if (t.truncated_fields?.length) parts.push(<span class="warn">cut or converted to fit: {t.truncated_fields.join(", ")}</span>);
  if (t.status === "retrying" && t.next_attempt_at)
    parts.push(
      <span>
        next try <When at={t.next_attempt_at} />
      </span>,
    );
  if (t.last_error) parts.push(<span class="warn">{t.last_error}</span>);
  if (t.attempts && t.attempts > 1) parts.push(<span>{t.attempts} attempts</span>);
  if (t.dead_letter) parts.push(<span class="warn">given up; the operator can send it again</span>);
  if (t.superseded_by) parts.push(<span>carried by a newer change</span>);
  return parts.map((p, i) => (
    <span key={i} class="detail">
      {p}
    </span>
  ));
}

function settingsLine(s: object) {
  return Object.entries(s)
    .map(([k, v]) => (k === "avatar" ? "a new avatar" : `${k} “${String(v)}”`))
    .join(", ");
}

function History({ version, shown, onShow }: { version: number; shown: string | null; onShow: (id: string) => void }) {
  const { api } = useCtx();
  const [changes, setChanges] = useState<Change[]>([]);
  const [next, setNext] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    // A reload started later wins: an older answer arriving last is dropped.
    let current = true;
    api.get<{ changes: Change[]; next_before: string | null }>("/v1/changes?limit=10").then(
      (r) => {
        if (!current) return;
        setChanges(r.changes);
        setNext(r.next_before);
      },
      (e) => current && setError(describe(e)),
    );
    return () => {
      current = false;
    };
  }, [api, version]);
  async function older() {
    if (!next) return;
    try {
      const r = await api.get<{ changes: Change[]; next_before: string | null }>(`/v1/changes?limit=10&before=${encodeURIComponent(next)}`);
      setChanges((c) => [...c, ...r.changes]);
      setNext(r.next_before);
    } catch (e) {
      setError(describe(e));
    }
  }
  return (
    <section aria-labelledby="history-title">
      <h2 id="history-title">Recent changes</h2>
      <ErrorLine error={error} />
      {changes.length === 0 && <p>No change yet.</p>}
      <ul class="rows" data-testid="history">
        {changes.map((c) => (
          <li key={c.id} class={`row ${c.id === shown ? "current" : ""}`}>
            <div>
              <span class={`badge ${c.status}`}>{LABELS[c.status] ?? c.status}</span> {c.settings ? settingsLine(c.settings) : ""}
              <div class="hint">
                <When at={c.created_at} /> · {c.targets.map((t) => `${t.module}: ${LABELS[t.status] ?? t.status}`).join(" · ")}
              </div>
            </div>
            <button type="button" class="secondary" onClick={() => onShow(c.id)} aria-label="Show this change's delivery">
              Show
            </button>
          </li>
        ))}
      </ul>
      {next && (
        <button type="button" class="secondary" onClick={older}>
          Older changes
        </button>
      )}
    </section>
  );
}
