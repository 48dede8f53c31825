// This browser's device inbox (`GET /v1/devices/current/events`), followed
// while the page is open: file statuses, devices joining and leaving arrive
// here. A broken stream is resumed from the last event id with a growing
// pause (1 s doubling to 30 s), so nothing is missed.
import { Api, ApiError } from "./api";

export type InboxState = "connecting" | "live" | "reconnecting" | "ended";
export interface InboxEvent {
  id: string;
  kind: string;
  data: any;
}

export class Inbox {
  private listeners = new Set<(e: InboxEvent) => void>();
  private stateListeners = new Set<(s: InboxState) => void>();
  private abort = new AbortController();
  private lastId: string | undefined;
  state: InboxState = "connecting";

  constructor(
    private api: Api,
    private onEnded: (reason: string) => void,
  ) {
    void this.run();
  }

  on(listener: (e: InboxEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  onState(listener: (s: InboxState) => void): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  close() {
    this.abort.abort();
  }

  private set(state: InboxState) {
    this.state = state;
    this.stateListeners.forEach((l) => l(state));
  }

  private async run() {
    let pause = 1000;
    while (!this.abort.signal.aborted) {
      let ended: string | null = null;
      try {
        this.set(this.state === "connecting" ? "connecting" : "reconnecting");
        await this.api.stream(
          "/v1/devices/current/events",
          (m) => {
            pause = 1000;
            if (m.id) this.lastId = m.id;
            let data: any = null;
            try {
              data = m.data ? JSON.parse(m.data) : null;
            } catch {
              data = m.data;
            }
            if (m.event === "error") {
              ended = data?.message ?? "the device's session ended";
              return;
            }
            const event = { id: m.id ?? "", kind: m.event ?? "message", data };
            this.listeners.forEach((l) => l(event));
          },
          this.abort.signal,
          this.lastId,
          () => this.set("live"),
        );
      } catch (e) {
        if (e instanceof ApiError && (e.status === 401 || e.status === 403)) ended = e.message;
      }
      if (ended) {
        this.set("ended");
        this.onEnded(ended);
        return;
      }
      if (this.abort.signal.aborted) return;
      this.set("reconnecting");
      await new Promise((r) => setTimeout(r, pause));
      pause = Math.min(pause * 2, 30_000);
    }
  }
}
