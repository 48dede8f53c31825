//! Handoff (H1-H6), the reference service plugin: an application session
//! held by one of the user's devices and moved to another on request. The
//! state machine is pure (`machine`); this file is the glue: routes, the
//! host's key-value store (every step one atomic commit that checks the
//! versions it read), device events and offer timers.
//!
//! Requests are idempotent: a `POST` carrying an `Idempotency-Key` header
//! is answered once and its answer stored in the same commit, so a retry
//! gets the same answer (`Idempotent-Replayed: true`) and changes nothing;
//! a retried progress update, accept or decline is recognised as such.

pub mod machine;

#[cfg(target_arch = "wasm32")]
mod glue {
    use crate::machine::{DeviceInfo, Notice, Refusal, Session, Switch, SwitchStatus};
    use plugin_sdk::service::kit::{
        answer, body, commit, error, get, iso, put, query, store_error as commit_error,
    };
    use plugin_sdk::service::{devices, events, kv, timers, Request, Response, Service};
    use serde::{Deserialize, Serialize};
    use serde_json::{json, Value};
    use std::cell::RefCell;

    struct Handoff;

    thread_local! {
        /// The `idem/...` key of the current request's `Idempotency-Key`.
        static IDEMPOTENCY: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    /// Offers expire after this long unless the config says otherwise.
    const OFFER_TTL_MS: u64 = 60_000;

    /// The operator's settings (the manifest's `config`).
    #[derive(Deserialize)]
    struct Settings {
        /// How long an offer waits for its answer, 1-3600 s.
        offer_ttl_secs: Option<u64>,
    }

    /// The offer TTL: the config's `offer_ttl_secs` (held to 1-3600 s),
    /// else 60 s.
    fn offer_ttl_ms() -> u64 {
        plugin_sdk::service::config_as::<Settings>()
            .ok()
            .and_then(|s| s.offer_ttl_secs)
            .map_or(OFFER_TTL_MS, |secs| secs.clamp(1, 3600) * 1000)
    }

    fn refusal(r: Refusal) -> Response {
        match r {
            Refusal::StateTooLarge(n) => error(
                413,
                "state_too_large",
                &format!("the state is {n} bytes of JSON; at most {}", crate::machine::MAX_STATE_BYTES),
            ),
            Refusal::StaleVersion { current } => error(
                409,
                "stale_version",
                &format!("the session is at version {current}; read it and apply your change to it"),
            ),
            Refusal::NotHolder => error(409, "not_holder", "only the device holding the session may do this"),
            Refusal::NotOffered => error(409, "not_offered", "this switch is not offered to this device (any more)"),
            Refusal::NoTarget => error(422, "no_target", "no device fits: name one, pair devices, or register one that can continue this app"),
            Refusal::UnknownDevice(d) => error(422, "unknown_device", &format!("{d:?} is not one of your devices")),
        }
    }

    fn id() -> String {
        let mut bytes = [0u8; 12];
        let _ = getrandom::fill(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn now() -> u64 {
        plugin_sdk::service::clock::now_ms()
    }

    /// Stored answers of idempotent requests.
    #[derive(Serialize, Deserialize)]
    struct Stored {
        status: u16,
        body: Value,
    }

    fn replayed(stored: Stored) -> Response {
        let mut r = answer(stored.status, &stored.body);
        r.headers.push(plugin_sdk::service::Header {
            name: "idempotent-replayed".into(),
            value: "true".into(),
        });
        r
    }

    /// Commits `writes` and answers `status` `body`; under an idempotency
    /// key the answer is stored in the same commit (a concurrent twin
    /// loses and gets the winner's answer).
    fn commit_answer(
        mut writes: Vec<kv::Write>,
        status: u16,
        body: Value,
    ) -> Result<Response, Response> {
        let key = IDEMPOTENCY.with(|k| k.borrow().clone());
        if let Some(key) = &key {
            writes.push(put(
                key,
                &Stored {
                    status,
                    body: body.clone(),
                },
                0,
            ));
        }
        match (kv::commit(&writes), key) {
            (Err(kv::KvError::Conflict(k)), Some(key)) if k == key => match get::<Stored>(&key)? {
                Some(stored) => Err(replayed(stored.value)),
                None => Err(error(503, "store_failed", "an idempotent answer vanished")),
            },
            (result, _) => result
                .map(|_| answer(status, &body))
                .map_err(|e| commit_error(&e)),
        }
    }

    /// Log entries per page of `GET .../log`, counted in steps.
    const LOG_PAGE: u32 = 200;

    /// `writes` and one step's log entries, stored as a key of their own,
    /// `log/{session}/{step}`, numbered by the counter `logn/{session}`: the
    /// log never has to be read to grow, so a session's log can be as long
    /// as its life (one stored value would reach the store's value limit).
    fn logged(
        mut writes: Vec<kv::Write>,
        session: &str,
        entries: &[Value],
    ) -> Result<Vec<kv::Write>, Response> {
        let counter = format!("logn/{session}");
        let (step, version) = get::<u64>(&counter)?.map_or((0, 0), |r| (r.value, r.version));
        writes.push(put(&counter, &(step + 1), version));
        writes.push(put(&format!("log/{session}/{:012}", step + 1), &entries, 0));
        Ok(writes)
    }

    fn entry(device: &str, event: &str, extra: Value) -> Value {
        let mut e = json!({"at": iso(now()), "device": device, "event": event});
        if let (Some(e), Some(extra)) = (e.as_object_mut(), extra.as_object()) {
            e.extend(extra.clone());
        }
        e
    }

    fn session_view(s: &Session) -> Value {
        json!({"id": s.id, "app": s.app, "holder": s.holder, "version": s.version, "state": s.state})
    }

    fn switch_view(s: &Switch) -> Value {
        let status = match s.status {
            SwitchStatus::Offered => "offered",
            SwitchStatus::Accepted => "accepted",
            SwitchStatus::Unplaced => "unplaced",
        };
        let expires_at = (s.status == SwitchStatus::Offered).then(|| iso(s.expires_at));
        json!({"switch_id": s.id, "session_id": s.session_id, "status": status, "to": s.to,
               "from": s.from, "expires_at": expires_at,
               "tried": s.tried.iter().map(|t| json!({"device": t.device, "answer": t.answer, "at": iso(t.at)})).collect::<Vec<_>>()})
    }

    fn all_devices() -> Vec<DeviceInfo> {
        devices::all()
            .into_iter()
            .map(|d| DeviceInfo {
                id: d.id,
                capabilities: d.capabilities,
                active: d.active,
            })
            .collect()
    }

    #[derive(Serialize, Deserialize, Default)]
    struct Chain {
        chain: Vec<String>,
    }

    fn chain() -> Result<Vec<String>, Response> {
        Ok(get::<Chain>("pairings")?
            .map(|r| r.value.chain)
            .unwrap_or_default())
    }

    fn offer(switch: &Switch, session: &Session) -> Result<(), Response> {
        let Some(to) = &switch.to else { return Ok(()) };
        let payload = json!({"switch_id": switch.id, "session_id": session.id, "app": session.app,
            "state": session.state, "version": session.version, "from": session.holder,
            "expires_at": iso(switch.expires_at)});
        events::publish(std::slice::from_ref(to), "offer", &payload.to_string())
            .map_err(|e| error(503, "event_failed", &e))?;
        timers::schedule(&format!("switch/{}", switch.id), switch.expires_at);
        Ok(())
    }

    fn handle(request: Request) -> Result<Response, Response> {
        let caller = request
            .caller
            .clone()
            .ok_or_else(|| error(401, "missing_token", "a device token is required"))?;
        let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
        let method = request.method.as_str();
        // Reads are the user's (the web page reads with a user token);
        // every other request acts as the calling device.
        let reads = method == "GET" || (method == "PUT" && segments.as_slice() == ["pairings"]);
        let device = match caller.device_id.clone() {
            Some(device) => device,
            None if reads => String::new(),
            None => {
                return Err(error(
                    403,
                    "device_token_required",
                    "handoff acts as a device: use a device token",
                ))
            }
        };
        if method == "POST" {
            if let Some(key) = idempotency_key(&request, &device)? {
                if let Some(stored) = get::<Stored>(&key)? {
                    return Ok(replayed(stored.value));
                }
                IDEMPOTENCY.with(|k| *k.borrow_mut() = Some(key));
            }
        }
        let ttl = offer_ttl_ms();
        match (method, segments.as_slice()) {
            ("GET", ["sessions"]) => {
                let after = query(&request, "after").unwrap_or_default();
                let page = kv::scan("session/", &format!("session/{after}"), 100)
                    .map_err(|e| commit_error(&e))?;
                let sessions: Vec<Value> = page
                    .iter()
                    .filter_map(|e| serde_json::from_slice::<Session>(&e.value).ok())
                    .map(|s| session_view(&s))
                    .collect();
                let next = (page.len() == 100)
                    .then(|| sessions.last().map(|s| s["id"].clone()))
                    .flatten();
                Ok(answer(
                    200,
                    &json!({"sessions": sessions, "next_after": next}),
                ))
            }
            ("POST", ["sessions"]) => {
                #[derive(Deserialize, Default)]
                struct Open {
                    app: String,
                    state: Value,
                }
                let open: Open = body(&request)?;
                if open.app.trim().is_empty() || open.app.len() > 2048 {
                    return Err(error(422, "invalid_body", "app is 1-2048 characters"));
                }
                let session =
                    Session::open(id(), &device, open.app, open.state).map_err(refusal)?;
                commit_answer(
                    logged(
                        vec![put(&format!("session/{}", session.id), &session, 0)],
                        &session.id,
                        &[entry(&device, "opened", json!({"version": 1}))],
                    )?,
                    201,
                    session_view(&session),
                )
            }
            ("GET", ["sessions", sid]) => {
                let s = get::<Session>(&format!("session/{sid}"))?
                    .ok_or_else(|| error(404, "not_found", "no such session"))?;
                Ok(answer(200, &session_view(&s.value)))
            }
            ("PUT", ["sessions", sid]) => {
                #[derive(Deserialize, Default)]
                struct Progress {
                    version: u64,
                    state: Value,
                }
                let p: Progress = body(&request)?;
                let key = format!("session/{sid}");
                let mut s = get::<Session>(&key)?
                    .ok_or_else(|| error(404, "not_found", "no such session"))?;
                let changed = s
                    .value
                    .progress(&device, p.version, p.state)
                    .map_err(refusal)?;
                if !changed {
                    return Ok(answer(200, &session_view(&s.value)));
                }
                commit(logged(
                    vec![put(&key, &s.value, s.version)],
                    sid,
                    &[entry(
                        &device,
                        "progress",
                        json!({"version": s.value.version}),
                    )],
                )?)?;
                Ok(answer(200, &session_view(&s.value)))
            }
            ("GET", ["sessions", sid, "log"]) => {
                get::<Session>(&format!("session/{sid}"))?
                    .ok_or_else(|| error(404, "not_found", "no such session"))?;
                let prefix = format!("log/{sid}/");
                let after = query(&request, "after").unwrap_or_default();
                let steps = kv::scan(&prefix, &format!("{prefix}{after}"), LOG_PAGE)
                    .map_err(|e| commit_error(&e))?;
                let next = (steps.len() == LOG_PAGE as usize)
                    .then(|| steps.last().map(|e| e.key[prefix.len()..].to_owned()))
                    .flatten();
                let entries: Vec<Value> = steps
                    .iter()
                    .filter_map(|e| serde_json::from_slice::<Vec<Value>>(&e.value).ok())
                    .flatten()
                    .collect();
                Ok(answer(
                    200,
                    &json!({"entries": entries, "next_after": next}),
                ))
            }
            ("POST", ["sessions", sid, "switch"]) => {
                #[derive(Deserialize, Default)]
                struct Ask {
                    to: Option<String>,
                }
                let ask: Ask = body(&request)?;
                let s = get::<Session>(&format!("session/{sid}"))?
                    .ok_or_else(|| error(404, "not_found", "no such session"))?;
                let (switch, _) = Switch::ask(
                    id(),
                    &s.value,
                    &device,
                    ask.to.as_deref(),
                    &chain()?,
                    &all_devices(),
                    now(),
                    ttl,
                )
                .map_err(refusal)?;
                let answered = commit_answer(
                    logged(
                        vec![put(&format!("switch/{}", switch.id), &switch, 0)],
                        sid,
                        &[entry(
                            &device,
                            "offered",
                            json!({"switch_id": switch.id, "to": switch.to}),
                        )],
                    )?,
                    202,
                    json!({"switch_id": switch.id, "status": "offered", "to": switch.to,
                           "expires_at": iso(switch.expires_at)}),
                )?;
                offer(&switch, &s.value)?;
                Ok(answered)
            }
            ("GET", ["switches", wid]) => {
                let w = get::<Switch>(&format!("switch/{wid}"))?
                    .ok_or_else(|| error(404, "not_found", "no such switch"))?;
                Ok(answer(200, &switch_view(&w.value)))
            }
            ("POST", ["switches", wid, verb @ ("accept" | "decline")]) => {
                #[derive(Deserialize, Default)]
                struct Decline {
                    reason: Option<String>,
                }
                let reason: Decline = body(&request)?;
                let reason = reason.reason.unwrap_or_else(|| "declined".into());
                step(
                    wid,
                    &device,
                    if *verb == "accept" {
                        None
                    } else {
                        Some(reason.as_str())
                    },
                    false,
                )
            }
            ("GET", ["pairings"]) => Ok(answer(200, &json!({"chain": chain()?}))),
            ("PUT", ["pairings"]) => {
                let new: Chain = body(&request)?;
                let mine = all_devices();
                if let Some(d) = new.chain.iter().find(|d| !mine.iter().any(|m| &m.id == *d)) {
                    return Err(error(
                        422,
                        "unknown_device",
                        &format!("{d:?} is not one of your devices"),
                    ));
                }
                let version = get::<Chain>("pairings")?.map_or(0, |r| r.version);
                commit(vec![put("pairings", &new, version)])?;
                Ok(answer(200, &json!({"chain": new.chain})))
            }
            _ => Err(error(404, "not_found", "no such handoff route")),
        }
    }

    /// Accept (`reason` none), decline, or expire (`expired`) a switch.
    fn step(
        wid: &str,
        device: &str,
        reason: Option<&str>,
        expired: bool,
    ) -> Result<Response, Response> {
        let wkey = format!("switch/{wid}");
        let mut w =
            get::<Switch>(&wkey)?.ok_or_else(|| error(404, "not_found", "no such switch"))?;
        let skey = format!("session/{}", w.value.session_id);
        let mut s =
            get::<Session>(&skey)?.ok_or_else(|| error(404, "not_found", "no such session"))?;
        if !expired && w.value.answered(device, reason.is_none()) {
            return Ok(answer(200, &switch_view(&w.value)));
        }
        let mut log = Vec::new();
        let notice = match (reason, expired) {
            (None, false) => {
                let n = w
                    .value
                    .accept(&mut s.value, device, now())
                    .map_err(refusal)?;
                log.push(entry(device, "accepted", json!({"switch_id": wid})));
                log.push(entry(
                    device,
                    "moved",
                    json!({"switch_id": wid, "from": w.value.from}),
                ));
                n
            }
            (reason, _) => {
                let reason = if expired { None } else { reason };
                let n = w
                    .value
                    .decline(
                        &s.value,
                        device,
                        reason,
                        &chain()?,
                        &all_devices(),
                        now(),
                        offer_ttl_ms(),
                    )
                    .map_err(refusal)?;
                log.push(entry(
                    device,
                    "declined",
                    json!({"switch_id": wid, "reason": reason.unwrap_or("expired")}),
                ));
                match &n {
                    Notice::Offer { to } => log.push(entry(
                        device,
                        "offered",
                        json!({"switch_id": wid, "to": to}),
                    )),
                    Notice::Failed { .. } => log.push(entry(
                        &s.value.holder,
                        "unplaced",
                        json!({"switch_id": wid}),
                    )),
                    Notice::Moved { .. } => {}
                }
                n
            }
        };
        commit(logged(
            vec![
                put(&wkey, &w.value, w.version),
                put(&skey, &s.value, s.version),
            ],
            &s.value.id,
            &log,
        )?)?;
        timers::cancel(&format!("switch/{wid}"));
        let published = match &notice {
            Notice::Offer { .. } => {
                return offer(&w.value, &s.value).map(|()| answer(200, &switch_view(&w.value)))
            }
            Notice::Moved { old_holder, to } => events::publish(
                std::slice::from_ref(old_holder),
                "moved",
                &json!({"session_id": s.value.id, "to": to}).to_string(),
            ),
            Notice::Failed { holder } => events::publish(
                std::slice::from_ref(holder),
                "failed",
                &json!({"session_id": s.value.id, "switch_id": wid}).to_string(),
            ),
        };
        published.map_err(|e| error(503, "event_failed", &e))?;
        Ok(answer(200, &switch_view(&w.value)))
    }

    /// The request's `Idempotency-Key` as a store key of the device.
    fn idempotency_key(request: &Request, device: &str) -> Result<Option<String>, Response> {
        let Some(h) = request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("idempotency-key"))
        else {
            return Ok(None);
        };
        if h.value.is_empty() || h.value.len() > 128 {
            return Err(error(
                422,
                "invalid_idempotency_key",
                "Idempotency-Key is 1-128 characters",
            ));
        }
        Ok(Some(format!("idem/{device}/{}", h.value)))
    }

    impl Service for Handoff {
        fn handle(request: Request) -> Response {
            IDEMPOTENCY.with(|k| *k.borrow_mut() = None);
            handle(request).unwrap_or_else(|e| e)
        }

        fn on_timer(_user_id: String, name: String) {
            if let Some(wid) = name.strip_prefix("switch/") {
                if let Ok(Some(w)) = get::<Switch>(&format!("switch/{wid}")) {
                    if w.value.status == SwitchStatus::Offered && w.value.expires_at <= now() {
                        if let Some(to) = w.value.to.clone() {
                            let _ = step(wid, &to, None, true);
                        }
                    }
                }
            }
        }
    }

    plugin_sdk::export_service!(Handoff);
}
