// The page's frame: signed out, the login form; signed in, a header with the
// sections (hash routes, so the gateway serves one document) and the
// section's page. Everything talks to the public API with this browser's
// device token.
import { createContext } from "preact";
import { useContext, useEffect, useMemo, useRef, useState } from "preact/hooks";
import { Api, describe, type Module } from "./api";
import { Inbox, type InboxState } from "./inbox";
import { forget, loadSession, logout, type Session } from "./session";
import { Login } from "./pages/login";
import { ChangePage } from "./pages/change";
import { NetworksPage } from "./pages/networks";
import { DevicesPage } from "./pages/devices";
import { FilesPage } from "./pages/files";
import { HandoffPage } from "./pages/handoff";
import { Offers } from "./offers";

export interface Ctx {
  api: Api;
  session: Session;
  inbox: Inbox;
  modules: Module[];
  reloadModules: () => void;
}

const Context = createContext<Ctx | null>(null);
export function useCtx(): Ctx {
  return useContext(Context)!;
}

const SECTIONS = [
  ["change", "Change once"],
  ["networks", "Networks"],
  ["devices", "Devices"],
  ["files", "Files"],
  ["handoff", "Handoff"],
] as const;
type Section = (typeof SECTIONS)[number][0];

/** The section a hash names, if any. */
function sectionOf(hash: string): Section | undefined {
  const name = hash.replace(/^#\/?/, "");
  return SECTIONS.find(([id]) => id === name)?.[0];
}

function currentSection(): Section {
  return sectionOf(location.hash) ?? "change";
}

export function App() {
  const [session, setSession] = useState<Session | null>(loadSession);
  const [notice, setNotice] = useState<string | null>(null);
  if (!session) {
    return (
      <Login
        notice={notice}
        onSignedIn={(s) => {
          setNotice(null);
          setSession(s);
        }}
      />
    );
  }
  return (
    <SignedIn
      key={session.token}
      session={session}
      onSignedOut={(why) => {
        forget();
        setNotice(why);
        setSession(null);
      }}
    />
  );
}

function SignedIn({ session, onSignedOut }: { session: Session; onSignedOut: (why: string | null) => void }) {
  const api = useMemo(() => new Api(session.token), [session.token]);
  const inbox = useMemo(() => new Inbox(api, (why) => onSignedOut(`You were signed out: ${why}. Log in again.`)), [api]);
  const [inboxState, setInboxState] = useState<InboxState>(inbox.state);
  const [section, setSection] = useState<Section>(currentSection);
  const [modules, setModules] = useState<Module[]>([]);
  const [modulesError, setModulesError] = useState<string | null>(null);
  const [modulesVersion, setModulesVersion] = useState(0);

  useEffect(() => {
    const off = inbox.onState(setInboxState);
    setInboxState(inbox.state);
    return () => {
      off();
      inbox.close();
    };
  }, [inbox]);
  useEffect(() => {
    // A hash that names no section (an anchor) leaves the section as it is.
    const onHash = () => {
      const named = sectionOf(location.hash);
      if (named) setSection(named);
    };
    addEventListener("hashchange", onHash);
    return () => removeEventListener("hashchange", onHash);
  }, []);
  useEffect(() => {
    api.get<{ modules: Module[] }>("/v1/modules").then(
      (r) => {
        setModules(r.modules);
        setModulesError(null);
      },
      (e) => setModulesError(`The networks could not be read: ${describe(e)}`),
    );
  }, [api, modulesVersion]);
  // A new section moves the focus to its content (not on the first load, so
  // the first Tab still reaches the skip link).
  const first = useRef(true);
  useEffect(() => {
    document.title = `${SECTIONS.find(([id]) => id === section)![1]} · Presence gateway`;
    if (!first.current) document.getElementById("main")?.focus();
    first.current = false;
  }, [section]);

  const ctx: Ctx = { api, session, inbox, modules, reloadModules: () => setModulesVersion((v) => v + 1) };
  return (
    <Context.Provider value={ctx}>
      <a
        class="skip"
        href="#main"
        onClick={(e) => {
          e.preventDefault();
          document.getElementById("main")?.focus();
        }}
      >
        Skip to content
      </a>
      <header class="top">
        <div class="brand">
          <span class="logo" aria-hidden="true" />
          Presence gateway
        </div>
        <nav aria-label="Sections">
          <ul>
            {SECTIONS.map(([id, label]) => (
              <li key={id}>
                <a href={`#/${id}`} aria-current={section === id ? "page" : undefined}>
                  {label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div class="who">
          <span class={`live ${inboxState}`} title="This browser's event stream" data-testid="inbox-state">
            {inboxState === "live" ? "live" : inboxState === "ended" ? "offline" : "connecting…"}
          </span>
          <span>{session.username}</span>
          <button
            type="button"
            class="link"
            onClick={async () => {
              inbox.close();
              await logout(session);
              onSignedOut(null);
            }}
          >
            Log out
          </button>
        </div>
      </header>
      <Offers />
      <main id="main" tabIndex={-1}>
        <ErrorLine error={modulesError} />
        {section === "change" && <ChangePage />}
        {section === "networks" && <NetworksPage />}
        {section === "devices" && <DevicesPage />}
        {section === "files" && <FilesPage />}
        {section === "handoff" && <HandoffPage />}
      </main>
    </Context.Provider>
  );
}

/** An error line read out by screen readers when it appears. */
export function ErrorLine({ error }: { error: string | null }) {
  return (
    <p class="error" role="alert" hidden={!error}>
      {error}
    </p>
  );
}

/** A time as the user reads it, with the exact value on hover. */
export function When({ at }: { at: string | null | undefined }) {
  if (!at) return <span>—</span>;
  const d = new Date(at);
  return (
    <time dateTime={at} title={at}>
      {d.toLocaleString()}
    </time>
  );
}
