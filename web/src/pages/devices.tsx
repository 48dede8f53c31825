// The user's devices (terminals) with their active/silent state, and what
// happened to them lately. Refreshed when a device joins or leaves, and
// every 15 s for the states.
import { useEffect, useState } from "preact/hooks";
import { describe, type Device } from "../api";
import { ErrorLine, When, useCtx } from "../app";

interface HistoryEntry {
  device: string;
  event: string;
  at: string;
}

/** The user's devices, kept current; and why the last read failed, if it did. */
export function useDevices(): [Device[], string | null] {
  const { api, inbox } = useCtx();
  const [devices, setDevices] = useState<Device[]>([]);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let alive = true;
    const load = () =>
      api.get<{ devices: Device[] }>("/v1/devices").then(
        (r) => {
          if (!alive) return;
          setDevices(r.devices);
          setError(null);
        },
        (e) => alive && setError(`Your devices could not be read: ${describe(e)}`),
      );
    load();
    const timer = setInterval(load, 15_000);
    const off = inbox.on((e) => e.kind.startsWith("device.") && load());
    return () => {
      alive = false;
      clearInterval(timer);
      off();
    };
  }, [api, inbox]);
  return [devices, error];
}

export function DevicesPage() {
  const { api, session, inbox } = useCtx();
  const [devices, devicesError] = useDevices();
  const [history, setHistory] = useState<HistoryEntry[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [version, setVersion] = useState(0);
  useEffect(() => {
    // A reload started later wins: an older answer arriving last is dropped.
    let current = true;
    api.get<{ entries: HistoryEntry[] }>("/v1/devices/history").then(
      (r) => current && setHistory(r.entries.slice(0, 30)),
      (e) => current && setError(describe(e)),
    );
    const off = inbox.on((e) => e.kind.startsWith("device.") && setVersion((v) => v + 1));
    return () => {
      current = false;
      off();
    };
  }, [api, inbox, version]);
  const nameOf = (id: string) => devices.find((d) => d.id === id)?.name ?? id;

  async function remove(d: Device) {
    if (!confirm(`Remove ${d.name}? Its token stops working and its inbox is deleted.`)) return;
    try {
      await api.request("DELETE", `/v1/devices/${encodeURIComponent(d.id)}`);
      setVersion((v) => v + 1);
    } catch (e) {
      setError(describe(e));
    }
  }

  return (
    <>
      <h1>Devices</h1>
      <ErrorLine error={devicesError ?? error} />
      <ul class="rows" data-testid="devices">
        {devices.map((d) => (
          <li key={d.id} class="row" data-device={d.id}>
            <div>
              <span class={`badge ${d.state}`}>{d.state}</span> <strong>{d.name}</strong>
              {d.id === session.device && <span class="hint"> (this browser)</span>}
              <div class="hint">
                {d.platform ?? "unknown platform"} · last seen <When at={d.last_seen} />
                {d.ip ? ` from ${d.ip}` : ""}
                {d.capabilities.length ? ` · continues ${d.capabilities.join(", ")}` : ""}
              </div>
            </div>
            {d.id !== session.device && (
              <button type="button" class="secondary" onClick={() => remove(d)} aria-label={`Remove ${d.name}`}>
                Remove
              </button>
            )}
          </li>
        ))}
      </ul>
      <h2>Lately</h2>
      <ul class="log">
        {history.map((h, i) => (
          <li key={i}>
            <When at={h.at} /> {nameOf(h.device)} {h.event}
          </li>
        ))}
      </ul>
    </>
  );
}
