// A typed client of the gateway's public HTTP API (docs/API.md). The token
// goes in the Authorization header only, never in a URL: event streams are
// read with fetch() and a ReadableStream, since EventSource cannot send it.
import { createParser, type EventSourceMessage } from "eventsource-parser";

/** An error answer of the API: `{"error": {"code", "message"}}`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly body: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

export type Field = "avatar" | "signature" | "mood";

export interface AvatarLimits {
  max_pixels: number;
  max_bytes: number;
  formats: string[];
}

export interface Limits {
  max_signature_chars?: number | null;
  max_mood_chars?: number | null;
  avatar?: AvatarLimits | null;
}

export interface CredentialField {
  name: string;
  label: string;
  kind: "text" | "secret" | "url" | "integer" | "boolean";
  secret: boolean;
  required: boolean;
  help?: string | null;
}

export interface Module {
  id: string;
  name: string;
  version: number;
  fields: Field[];
  limits: Limits;
  moods: string[];
  credentials?: CredentialField[];
}

export interface Settings {
  avatar?: string;
  signature?: string;
  mood?: string;
}

export interface Binding {
  id: string;
  module: string;
  account: string;
  created_at: string;
  last_applied: Settings | null;
}

export type TargetStatus = "pending" | "delivering" | "delivered" | "retrying" | "failed" | "superseded";

export interface Target {
  binding_id: string;
  module: string;
  account: string;
  status: TargetStatus;
  attempts?: number;
  last_error?: string | null;
  applied_fields?: Field[];
  truncated_fields?: Field[];
  delivered_at?: string | null;
  superseded_by?: string | null;
  next_attempt_at?: string | null;
  dead_letter?: boolean;
}

export interface Change {
  id: string;
  module?: string;
  settings?: Settings;
  created_at?: string;
  status: string;
  targets: Target[];
}

export interface Device {
  id: string;
  name: string;
  platform: string | null;
  capabilities: string[];
  state: "active" | "silent";
  last_seen: string | null;
  ip: string | null;
  port: number | null;
}

export interface FileRecord {
  id: string;
  name: string;
  type: string;
  size: number;
  sha256: string | null;
  status: "01" | "10" | "11" | "00";
  offset: number;
  reason: string | null;
  uploaded_by: string | null;
  updated_at: string;
  downloads: Record<string, string>;
}

export interface HandoffSession {
  id: string;
  app: string;
  holder: string;
  version: number;
  state: unknown;
}

export interface LogEntry {
  at: string;
  device: string;
  event: string;
  [key: string]: unknown;
}

/** Calls the API as the holder of `token` (or anonymously). */
export class Api {
  constructor(public token: string | null) {}

  headers(extra: Record<string, string> = {}): Record<string, string> {
    const h: Record<string, string> = { ...extra };
    if (this.token) h["authorization"] = `Bearer ${this.token}`;
    return h;
  }

  /** Any request; JSON bodies are encoded, error answers thrown as ApiError. */
  async request(method: string, path: string, body?: unknown, extra: Record<string, string> = {}): Promise<Response> {
    const init: RequestInit = { method, headers: this.headers(extra), cache: "no-store" };
    if (body instanceof Blob) {
      init.body = body;
    } else if (body !== undefined) {
      init.body = JSON.stringify(body);
      (init.headers as Record<string, string>)["content-type"] = "application/json";
    }
    let response: Response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new ApiError(0, "unreachable", "The gateway cannot be reached. Check your connection and try again.");
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  async json<T>(method: string, path: string, body?: unknown, extra?: Record<string, string>): Promise<T> {
    const response = await this.request(method, path, body, extra);
    if (response.status === 204) return undefined as T;
    return (await response.json()) as T;
  }

  get<T>(path: string): Promise<T> {
    return this.json<T>("GET", path);
  }

  /**
   * Follows a `text/event-stream` until it ends or `signal` aborts. Calls
   * `onEvent` for every event; resolves when the server closes the stream.
   */
  async stream(
    path: string,
    onEvent: (event: EventSourceMessage) => void,
    signal: AbortSignal,
    lastEventId?: string,
    onOpen?: () => void,
  ): Promise<void> {
    const extra: Record<string, string> = { accept: "text/event-stream" };
    if (lastEventId) extra["last-event-id"] = lastEventId;
    let response: Response;
    try {
      response = await fetch(path, { headers: this.headers(extra), signal, cache: "no-store" });
    } catch (e) {
      if (signal.aborted) return;
      throw new ApiError(0, "unreachable", `The event stream broke: ${String(e)}`);
    }
    if (!response.ok || !response.body) throw await errorOf(response);
    onOpen?.();
    const parser = createParser({ onEvent });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        parser.feed(value);
      }
    } catch (e) {
      if (signal.aborted) return;
      throw new ApiError(0, "unreachable", `The event stream broke: ${String(e)}`);
    } finally {
      // Ended by an error (a listener that threw, a broken connection):
      // the HTTP stream is closed too, so it does not count against the
      // user's open streams.
      void reader.cancel().catch(() => undefined);
      reader.releaseLock();
    }
  }
}

async function errorOf(response: Response): Promise<ApiError> {
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    if (body && body.error && typeof body.error.code === "string") {
      return new ApiError(response.status, body.error.code, body.error.message ?? body.error.code, body.error);
    }
  } catch {
    // not JSON: fall through
  }
  return new ApiError(response.status, "http_" + response.status, text || response.statusText || `HTTP ${response.status}`);
}

/** A message for people from anything thrown. */
export function describe(error: unknown): string {
  if (error instanceof ApiError) {
    if (error.status === 429) return `${error.message} (too many attempts: wait a little and try again)`;
    return error.message;
  }
  return error instanceof Error ? error.message : String(error);
}
