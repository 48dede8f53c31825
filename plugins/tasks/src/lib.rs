//! Cloud tasks (T1-T3), the reference service plugin for work a terminal
//! hands to the gateway. Built so far: T1, the preset client offered to
//! each device (`provisioning`, pure), its answers kept per device in the
//! host's key-value store, a declined offer brought back by a timer once the
//! operator's period has run; T2 backups (`backups`), whose bytes the
//! gateway stores as blobs before this plugin hears of them.

pub mod backups;
pub mod provisioning;

#[cfg(target_arch = "wasm32")]
mod glue {
    use crate::backups::{check_kind, listed, Backup};
    use crate::provisioning::{
        Client, Offer, Refusal, Status, Step, DEFAULT_OFFER_AGAIN_SECS, MAX_OFFER_AGAIN_SECS,
        MIN_OFFER_AGAIN_SECS,
    };
    use plugin_sdk::service::kit::{self, answer, error, get, put, remove, Read};
    use plugin_sdk::service::{
        blobs, events, log, timers, Description, Header, PublicRoute, Request, Response, Service,
    };
    use serde::Deserialize;
    use serde_json::{json, Value};

    struct Tasks;

    /// The operator's settings (the manifest's `config`).
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        /// The preset client; without it nothing is offered.
        client: Option<Client>,
        /// How long a declined offer stays away, 60 s to a year (default
        /// a week).
        offer_again_after_secs: Option<u64>,
    }

    fn settings() -> Result<Settings, Response> {
        let s: Settings = plugin_sdk::service::config_as().map_err(|e| {
            error(
                503,
                "misconfigured",
                &format!("the operator's tasks config is not valid: {e}"),
            )
        })?;
        if let Some(client) = &s.client {
            client.check().map_err(|e| {
                error(
                    503,
                    "misconfigured",
                    &format!("the operator's tasks config is not valid: {e}"),
                )
            })?;
        }
        Ok(s)
    }

    fn again_after_ms(s: &Settings) -> u64 {
        s.offer_again_after_secs
            .unwrap_or(DEFAULT_OFFER_AGAIN_SECS)
            .clamp(MIN_OFFER_AGAIN_SECS, MAX_OFFER_AGAIN_SECS)
            * 1000
    }

    fn now() -> u64 {
        plugin_sdk::service::clock::now_ms()
    }

    fn offer_key(device: &str) -> String {
        format!("offer/{device}")
    }

    fn view(offer: &Offer) -> Value {
        let status = match offer.status {
            Status::Offered => "offered",
            Status::Accepted => "accepted",
            Status::Declined => "declined",
        };
        json!({
            "status": status,
            "client": offer.client,
            "offered_at": kit::iso(offer.offered_at),
            "answered_at": offer.answered_at.map(kit::iso),
            "offer_again_at": offer.offer_again_at.map(kit::iso),
            "asked_by": if offer.asked_by_device { "device" } else { "gateway" },
        })
    }

    /// Stores the offer a step left and tells the device when it is
    /// (again) offered.
    fn keep(
        device: &str,
        read: Option<&Read<Offer>>,
        offer: &Offer,
        step: &Step,
    ) -> Result<(), Response> {
        if *step == Step::Same {
            return Ok(());
        }
        kit::commit(vec![put(
            &offer_key(device),
            offer,
            read.map_or(0, |r| r.version),
        )])?;
        if *step == Step::Offered {
            if let Err(e) = events::publish(&[device.to_owned()], "offer", &view(offer).to_string())
            {
                log::write(log::Level::Warn, &format!("offer event not published: {e}"));
            }
        }
        Ok(())
    }

    fn refusal(r: Refusal) -> Response {
        match r {
            Refusal::NotOffered => error(
                409,
                "not_offered",
                "no offer is waiting for this device's answer; GET /offer shows where it stands",
            ),
        }
    }

    fn offer_route(device: &str, action: Option<&str>) -> Result<Response, Response> {
        let settings = settings()?;
        let Some(client) = &settings.client else {
            return match action {
                None => Ok(answer(200, &json!({"status": "none"}))),
                Some(_) => Err(error(
                    404,
                    "no_client",
                    "the operator offers no preset client on this gateway",
                )),
            };
        };
        let now = now();
        let read = get::<Offer>(&offer_key(device))?;
        let stored = read.as_ref().map(|r| r.value.clone());
        let (mut offer, mut step) = match action {
            Some("request") => Offer::request(stored, client, now),
            _ => Offer::current(stored, client, now),
        };
        let answered = match action {
            Some("accept") => Some(offer.accept(now)),
            Some("decline") => Some(offer.decline(now, again_after_ms(&settings))),
            _ => None,
        };
        if let Some(answered) = answered {
            // Offered and answered in one request: no event, the device
            // knows.
            if answered.map_err(refusal)? != Step::Same {
                step = Step::Changed;
            }
        }
        keep(device, read.as_ref(), &offer, &step)?;
        if let (Some(at), Status::Declined) = (offer.offer_again_at, offer.status) {
            timers::schedule(&offer_key(device), at);
        }
        Ok(answer(200, &view(&offer)))
    }

    fn new_id() -> String {
        let mut bytes = [0u8; 16];
        let _ = getrandom::fill(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn backup_view(b: &Backup) -> Value {
        json!({"id": b.id, "kind": b.kind, "device": b.device, "size": b.size,
            "type": b.content_type, "sha256": b.sha256, "created_at": kit::iso(b.created_at)})
    }

    fn backup(id: &str) -> Result<Read<Backup>, Response> {
        get::<Backup>(&format!("backup/{id}"))?
            .ok_or_else(|| error(404, "unknown_backup", "no such backup"))
    }

    /// `PUT /backups/{kind}`: the gateway stored the body already (a blob
    /// route) and names it in `gateway-blob`.
    fn back_up(request: &Request, device: String, kind: &str) -> Result<Response, Response> {
        check_kind(kind).map_err(|e| error(422, "invalid_kind", &e))?;
        let blob = kit::header(request, "gateway-blob")
            .ok_or_else(|| {
                error(
                    503,
                    "blobs_not_granted",
                    "the operator has not granted this service blobs; backups cannot be stored",
                )
            })?
            .to_owned();
        let b = Backup {
            id: new_id(),
            kind: kind.to_owned(),
            device,
            size: kit::header(request, "gateway-blob-size")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            content_type: kit::header(request, "content-type")
                .unwrap_or("application/octet-stream")
                .to_owned(),
            sha256: kit::header(request, "gateway-blob-sha256")
                .unwrap_or_default()
                .to_owned(),
            blob,
            created_at: now(),
        };
        kit::commit(vec![put(&format!("backup/{}", b.id), &b, 0)])?;
        Ok(answer(201, &backup_view(&b)))
    }

    fn backups(request: &Request) -> Result<Response, Response> {
        let device = kit::query(request, "device");
        let kind = kit::query(request, "kind");
        if let Some(kind) = &kind {
            check_kind(kind).map_err(|e| error(422, "invalid_query", &e))?;
        }
        let mut found = Vec::new();
        let mut after = String::from("backup/");
        loop {
            let page = plugin_sdk::service::kv::scan("backup/", &after, 500)
                .map_err(|e| kit::store_error(&e))?;
            for entry in &page {
                if let Ok(b) = serde_json::from_slice::<Backup>(&entry.value) {
                    if listed(&b, device.as_deref(), kind.as_deref()) {
                        found.push(b);
                    }
                }
            }
            match page.last() {
                Some(last) if page.len() == 500 => after = last.key.clone(),
                _ => break,
            }
        }
        // Newest first.
        found.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(answer(
            200,
            &json!({"backups": found.iter().map(backup_view).collect::<Vec<_>>()}),
        ))
    }

    fn handle(request: Request) -> Result<Response, Response> {
        let caller = request
            .caller
            .clone()
            .ok_or_else(|| error(401, "missing_token", "a token is required"))?;
        let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
        let device = || {
            caller.device_id.clone().ok_or_else(|| {
                error(
                    403,
                    "device_required",
                    "call with the token of a registered device (POST /v1/devices)",
                )
            })
        };
        match (request.method.as_str(), segments.as_slice()) {
            ("GET", ["offer"]) => offer_route(&device()?, None),
            ("POST", ["offer", action @ ("request" | "accept" | "decline")]) => {
                offer_route(&device()?, Some(action))
            }
            ("PUT", ["backups", kind]) => back_up(&request, device()?, kind),
            ("GET", ["backups"]) => backups(&request),
            ("GET", ["backups", id]) => Ok(answer(200, &backup_view(&backup(id)?.value))),
            ("GET", ["backups", id, "content"]) => {
                let b = backup(id)?.value;
                Ok(Response {
                    status: 200,
                    headers: vec![
                        Header {
                            name: "gateway-blob".into(),
                            value: b.blob,
                        },
                        Header {
                            name: "content-type".into(),
                            value: b.content_type,
                        },
                    ],
                    body: Vec::new(),
                })
            }
            ("DELETE", ["backups", id]) => {
                let b = backup(id)?;
                kit::commit(vec![remove(&format!("backup/{id}"), b.version)])?;
                blobs::delete(&b.value.blob);
                Ok(Response {
                    status: 204,
                    headers: Vec::new(),
                    body: Vec::new(),
                })
            }
            (_, ["offer"] | ["offer", "request" | "accept" | "decline"]) => Err(error(
                405,
                "method_not_allowed",
                "GET /offer; POST /offer/request, /offer/accept, /offer/decline",
            )),
            _ => Err(error(
                404,
                "not_found",
                "no such route in the tasks service",
            )),
        }
    }

    impl Service for Tasks {
        fn describe() -> Description {
            Description {
                public_routes: Vec::new(),
                blob_routes: vec![PublicRoute {
                    method: "PUT".into(),
                    path_prefix: "/backups/".into(),
                }],
            }
        }

        fn handle(request: Request) -> Response {
            handle(request).unwrap_or_else(|e| e)
        }

        fn on_timer(_user_id: String, name: String) {
            let Some(device) = name.strip_prefix("offer/") else {
                return;
            };
            let Ok(settings) = settings() else { return };
            let Some(client) = &settings.client else {
                return;
            };
            if let Ok(read) = get::<Offer>(&name) {
                let stored = read.as_ref().map(|r| r.value.clone());
                if stored.is_none() {
                    return;
                }
                let (offer, step) = Offer::current(stored, client, now());
                if step == Step::Offered {
                    // A lost race with the device's own request changes
                    // nothing: that request told the device already.
                    let _ = keep(device, read.as_ref(), &offer, &step);
                }
            }
        }
    }

    plugin_sdk::export_service!(Tasks);
}
