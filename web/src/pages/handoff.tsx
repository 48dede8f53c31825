// Handoff sessions (an application session moving between the user's
// terminals): who holds each, and its log of offers, declines and moves.
import { useEffect, useState } from "preact/hooks";
import { ApiError, describe, type HandoffSession, type LogEntry } from "../api";
import { ErrorLine, When, useCtx } from "../app";
import { useDevices } from "./devices";
import { ANSWERED } from "../offers";

const BASE = "/v1/services/handoff";

export function HandoffPage() {
  const { api, inbox } = useCtx();
  const [devices] = useDevices();
  const [sessions, setSessions] = useState<HandoffSession[] | null>(null);
  const [open, setOpen] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [version, setVersion] = useState(0);
  const nameOf = (id: string) => devices.find((d) => d.id === id)?.name ?? id;

  useEffect(() => {
    api.get<{ sessions: HandoffSession[] }>(`${BASE}/sessions`).then(
      (r) => setSessions(r.sessions),
      (e) => setError(e instanceof ApiError && e.code === "unknown_service" ? "Handoff is not offered by this gateway." : describe(e)),
    );
    const reload = () => setVersion((v) => v + 1);
    addEventListener(ANSWERED, reload);
    const off = inbox.on((e) => e.kind.startsWith("handoff.") && reload());
    return () => {
      off();
      removeEventListener(ANSWERED, reload);
    };
  }, [api, inbox, version]);

  return (
    <>
      <h1>Handoff</h1>
      <p class="lead">Sessions your devices hand to each other. Start one from a terminal with the monitor’s handoff commands.</p>
      <ErrorLine error={error} />
      {sessions && sessions.length === 0 && <p>No handoff session yet.</p>}
      <ul class="rows" data-testid="handoff-sessions">
        {(sessions ?? []).map((s) => (
          <li key={s.id} class="row column">
            <div class="row">
              <div>
                <strong>{s.app}</strong>
                <div class="hint">
                  held by {nameOf(s.holder)} · version {s.version}
                </div>
              </div>
              <button type="button" class="secondary" aria-expanded={open === s.id} onClick={() => setOpen(open === s.id ? null : s.id)}>
                {open === s.id ? "Hide log" : "Show log"}
              </button>
            </div>
            {open === s.id && <Log id={s.id} version={version} nameOf={nameOf} />}
          </li>
        ))}
      </ul>
    </>
  );
}

function Log({ id, version, nameOf }: { id: string; version: number; nameOf: (id: string) => string }) {
  const { api } = useCtx();
  const [entries, setEntries] = useState<LogEntry[]>([]);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    // A reload started later wins: an older answer arriving last is dropped.
    let current = true;
    (async () => {
      const all: LogEntry[] = [];
      let after: string | null = null;
      do {
        const q: string = after ? `?after=${encodeURIComponent(after)}` : "";
        const page: { entries: LogEntry[]; next_after: string | null } = await api.get(
          `${BASE}/sessions/${encodeURIComponent(id)}/log${q}`,
        );
        all.push(...page.entries);
        after = page.next_after;
      } while (after && all.length < 2000);
      if (current) setEntries(all);
    })().catch((e) => current && setError(describe(e)));
    return () => {
      current = false;
    };
  }, [api, id, version]);
  return (
    <>
      <ErrorLine error={error} />
      <ol class="log" aria-label="Session log" data-testid="handoff-log">
        {entries.map((e, i) => (
          <li key={i}>
            <When at={e.at} /> {nameOf(e.device)}: {e.event}
            {describeEntry(e, nameOf)}
          </li>
        ))}
      </ol>
    </>
  );
}

function describeEntry(e: LogEntry, nameOf: (id: string) => string): string {
  switch (e.event) {
    case "offered":
      return ` to ${nameOf(String(e.to))}`;
    case "declined":
      return e.reason ? ` (${String(e.reason)})` : "";
    case "moved":
      return e.from ? ` from ${nameOf(String(e.from))}` : "";
    case "progress":
      return e.version ? ` (version ${String(e.version)})` : "";
    default:
      return "";
  }
}
