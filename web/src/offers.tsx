// Handoff offers to this browser, shown on every page while they stand:
// accept (the browser then holds the session; a web address opens from
// here) or decline (the switch moves on to the next device).
import { useEffect, useState } from "preact/hooks";
import { describe } from "./api";
import { useCtx } from "./app";

/** Fired on `window` once this browser answered an offer. */
export const ANSWERED = "handoff-answered";

interface Offer {
  switch_id: string;
  session_id: string;
  app: string;
  from: string;
  expires_at: string;
}

export function Offers() {
  const { api, inbox } = useCtx();
  const [offers, setOffers] = useState<Offer[]>([]);
  const [accepted, setAccepted] = useState<Offer | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(
    () =>
      inbox.on((e) => {
        if (e.kind !== "handoff.offer") return;
        const offer = e.data as Offer;
        if (Date.parse(offer.expires_at) > Date.now()) setOffers((list) => [...list.filter((o) => o.switch_id !== offer.switch_id), offer]);
      }),
    [inbox],
  );

  async function answer(offer: Offer, verb: "accept" | "decline") {
    setError(null);
    try {
      await api.json(
        "POST",
        `/v1/services/handoff/switches/${encodeURIComponent(offer.switch_id)}/${verb}`,
        verb === "decline" ? { reason: "busy" } : {},
      );
      if (verb === "accept") setAccepted(offer);
      // This device hears no event of its own answer: the handoff page reloads.
      dispatchEvent(new Event(ANSWERED));
    } catch (e) {
      setError(describe(e));
    }
    setOffers((list) => list.filter((o) => o.switch_id !== offer.switch_id));
  }

  if (offers.length === 0 && !accepted && !error) return null;
  return (
    <section class="offers" aria-label="Handoff offers" aria-live="polite">
      {offers.map((o) => (
        <div key={o.switch_id} class="offer" data-testid="offer">
          <span>
            <strong>{o.app}</strong> is offered to this browser
          </span>
          <button type="button" onClick={() => answer(o, "accept")}>
            Accept
          </button>
          <button type="button" class="secondary" onClick={() => answer(o, "decline")}>
            Decline
          </button>
        </div>
      ))}
      {accepted && (
        <div class="offer">
          <span>
            This browser now holds <strong>{accepted.app}</strong>.
          </span>
          {/^https?:\/\//.test(accepted.app) && (
            <a href={accepted.app} target="_blank" rel="noopener noreferrer">
              Open it
            </a>
          )}
          <button type="button" class="link" onClick={() => setAccepted(null)}>
            Dismiss
          </button>
        </div>
      )}
      {error && <p class="error">{error}</p>}
    </section>
  );
}
