// The signed-in state of this browser. Signing in makes the browser one of
// the user's devices (a stable id kept in localStorage), so the page holds a
// device token: it sees the device's event inbox (live file statuses) and is
// listed with the user's other terminals. The user session used to register
// the device is ended at once: one token lives, in localStorage only.
import { Api } from "./api";

const KEY = "gateway.session";
const DEVICE_KEY = "gateway.device_id.";

export interface Session {
  token: string;
  username: string;
  device: string;
  expires_at?: string;
}

export function loadSession(): Session | null {
  try {
    const raw = localStorage.getItem(KEY);
    if (!raw) return null;
    const s = JSON.parse(raw) as Session;
    return s && typeof s.token === "string" ? s : null;
  } catch {
    return null;
  }
}

function saveSession(s: Session | null) {
  if (s) localStorage.setItem(KEY, JSON.stringify(s));
  else localStorage.removeItem(KEY);
}

/**
 * This browser's stable device id for `username`: one per user, since a
 * device id belongs to one user of the gateway (people may share a browser).
 */
export function deviceId(username: string): string {
  let id = localStorage.getItem(DEVICE_KEY + username);
  if (!id) {
    id = "web-" + crypto.randomUUID();
    localStorage.setItem(DEVICE_KEY + username, id);
  }
  return id;
}

function browserName(): string {
  const ua = navigator.userAgent;
  const kind = /Android|iPhone|iPad|Mobile/.test(ua) ? "phone" : "computer";
  const brand = /Firefox\//.test(ua)
    ? "Firefox"
    : /Edg\//.test(ua)
      ? "Edge"
      : /Chrom/.test(ua)
        ? "Chromium"
        : /Safari\//.test(ua)
          ? "Safari"
          : "Browser";
  return `${brand} on a ${kind}`;
}

export async function register(username: string, password: string): Promise<void> {
  await new Api(null).json("POST", "/v1/users", { username, password });
}

/** Logs in and registers this browser as a device of the user. */
export async function login(username: string, password: string): Promise<Session> {
  const anonymous = new Api(null);
  const { token } = await anonymous.json<{ token: string }>("POST", "/v1/sessions", { username, password });
  const user = new Api(token);
  const device = await user.json<{ id: string; token: string }>("POST", "/v1/devices", {
    id: deviceId(username),
    name: browserName(),
    platform: "web",
  });
  // The device token acts as the user on every route; the login session is
  // not needed any more.
  await user.request("DELETE", "/v1/sessions/current").catch(() => undefined);
  const session = { token: device.token, username, device: device.id };
  saveSession(session);
  return session;
}

export async function logout(session: Session): Promise<void> {
  await new Api(session.token).request("DELETE", "/v1/sessions/current").catch(() => undefined);
  saveSession(null);
}

export function forget() {
  saveSession(null);
}
