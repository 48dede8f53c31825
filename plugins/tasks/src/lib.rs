//! Cloud tasks (T1-T3), the reference service plugin for work a terminal
//! hands to the gateway. Built so far: T1, the preset client offered to
//! each device (`provisioning`, pure), its answers kept per device in the
//! host's key-value store, a declined offer brought back by a timer once the
//! operator's period has run; T2 backups (`backups`) and shares
//! (`shares`), whose bytes the gateway stores as blobs before this plugin
//! hears of them. A share is kept in its owner's store and found by its id
//! (`kv::find`) on the public route that serves it. T2 media jobs and T3
//! kept results (`jobs`): the gateway queues and runs them (grant
//! `media`), this plugin routes them, remembers each user's job ids and
//! answers a result past its keep time with `410`.

pub mod backups;
pub mod jobs;
pub mod provisioning;
pub mod shares;

#[cfg(target_arch = "wasm32")]
mod glue {
    use crate::backups::{check_kind, listed, Backup};
    use crate::jobs::{keep_ms, result_state, ResultState, Submitted};
    use crate::provisioning::{
        Client, Offer, Refusal, Status, Step, DEFAULT_OFFER_AGAIN_SECS, MAX_OFFER_AGAIN_SECS,
        MIN_OFFER_AGAIN_SECS,
    };
    use crate::shares::{ttl_ms, Share, State};
    use plugin_sdk::service::kit::{self, answer, error, get, put, remove, Read};
    use plugin_sdk::service::{
        blobs, events, log, media, timers, Description, PublicRoute, Request, Response, Service,
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
        /// How long a job's result is kept once done, 60 s to 30 days
        /// (default a day).
        result_keep_secs: Option<u64>,
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
        let (blob, size, sha256) = stored_blob(request)?;
        let b = Backup {
            id: new_id(),
            kind: kind.to_owned(),
            device,
            size,
            content_type: kit::header(request, "content-type")
                .unwrap_or("application/octet-stream")
                .to_owned(),
            sha256,
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
        let mut found: Vec<Backup> = kit::scan_all::<Backup>("backup/")?
            .into_iter()
            .filter(|b| listed(b, device.as_deref(), kind.as_deref()))
            .collect();
        // Newest first.
        found.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(answer(
            200,
            &json!({"backups": found.iter().map(backup_view).collect::<Vec<_>>()}),
        ))
    }

    fn share_key(id: &str) -> String {
        format!("share/{id}")
    }

    fn share_view(s: &Share) -> Value {
        json!({"share_id": s.id, "type": s.content_type, "size": s.size,
            "created_at": kit::iso(s.created_at), "expires_at": kit::iso(s.expires_at),
            "revoked_at": s.revoked_at.map(kit::iso), "state": s.state(now()).name()})
    }

    /// `POST /shares[?expires_in=SECS]`: the body is a blob already.
    fn share(request: &Request) -> Result<Response, Response> {
        let ttl = ttl_ms(kit::query(request, "expires_in").as_deref())
            .map_err(|e| error(422, "invalid_query", &e))?;
        let (blob, size, _) = stored_blob(request)?;
        let now = now();
        let s = Share {
            id: new_id(),
            blob,
            content_type: kit::header(request, "content-type")
                .unwrap_or("application/octet-stream")
                .to_owned(),
            size,
            created_at: now,
            expires_at: now + ttl,
            revoked_at: None,
        };
        kit::commit(vec![put(&share_key(&s.id), &s, 0)])?;
        // At expiry the bytes go; the record stays to answer 410.
        timers::schedule(&share_key(&s.id), s.expires_at);
        Ok(answer(201, &share_view(&s)))
    }

    /// `GET /shares/{id}`, public: the bytes while the share is active.
    fn shared(id: &str) -> Result<Response, Response> {
        let unknown = || error(404, "unknown_share", "no such share");
        if id.len() != 32 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(unknown());
        }
        let found = plugin_sdk::service::kv::find(&share_key(id))
            .map_err(|e| kit::store_error(&e))?
            .ok_or_else(unknown)?;
        let s: Share = serde_json::from_slice(&found.entry.value)
            .map_err(|e| error(500, "corrupt_share", &e.to_string()))?;
        match s.state(now()) {
            State::Active => Ok(kit::blob(200, &s.blob, &s.content_type)),
            State::Expired => Err(error(
                410,
                "share_expired",
                &format!(
                    "this share expired at {}; ask its owner for a new one",
                    kit::iso(s.expires_at)
                ),
            )),
            State::Revoked => Err(error(
                410,
                "share_revoked",
                "its owner revoked this share; ask them for a new one",
            )),
        }
    }

    fn own_share(id: &str) -> Result<Read<Share>, Response> {
        get::<Share>(&share_key(id))?.ok_or_else(|| error(404, "unknown_share", "no such share"))
    }

    fn shares() -> Result<Response, Response> {
        let mut found = kit::scan_all::<Share>("share/")?;
        found.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(answer(
            200,
            &json!({"shares": found.iter().map(share_view).collect::<Vec<_>>()}),
        ))
    }

    /// `DELETE /shares/{id}`: revoked at once, its bytes deleted.
    fn revoke(id: &str) -> Result<Response, Response> {
        let mut s = own_share(id)?;
        if s.value.revoked_at.is_none() {
            s.value.revoked_at = Some(now());
            kit::commit(vec![put(&share_key(id), &s.value, s.version)])?;
            blobs::delete(&s.value.blob);
            timers::schedule(&share_key(id), s.value.forget_at());
        }
        Ok(kit::no_content())
    }

    /// The blob the gateway stored from a blob route's body: id, size,
    /// sha256.
    fn stored_blob(request: &Request) -> Result<(String, u64, String), Response> {
        let blob = kit::header(request, "gateway-blob").ok_or_else(|| {
            error(
                503,
                "blobs_not_granted",
                "the operator has not granted this service blobs; nothing can be stored",
            )
        })?;
        Ok((
            blob.to_owned(),
            kit::header(request, "gateway-blob-size")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            kit::header(request, "gateway-blob-sha256")
                .unwrap_or_default()
                .to_owned(),
        ))
    }

    /// `POST /inputs`: the body (stored as a blob already) becomes a job's
    /// input.
    fn input(request: &Request) -> Result<Response, Response> {
        let (blob, size, sha256) = stored_blob(request)?;
        kit::commit(vec![put(&format!("input/{blob}"), &now(), 0)])?;
        Ok(answer(
            201,
            &json!({"input": blob, "size": size, "sha256": sha256,
                "type": kit::header(request, "content-type").unwrap_or("application/octet-stream")}),
        ))
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct JobBody {
        kind: String,
        input: String,
        #[serde(default)]
        params: Value,
    }

    fn job_key(id: &str) -> String {
        format!("job/{id}")
    }

    fn job_error(e: &media::JobError) -> Value {
        json!({"code": e.code, "message": e.message, "help": e.help})
    }

    fn result_of(job: &media::Job) -> ResultState {
        result_state(
            job.status == media::JobStatus::Done,
            job.status == media::JobStatus::Failed,
            job.kept_until_ms,
            job.gone_ms,
            now(),
        )
    }

    fn job_view(job: &media::Job) -> Value {
        let status = match job.status {
            media::JobStatus::Queued => "queued",
            media::JobStatus::Running => "running",
            media::JobStatus::Done => "done",
            media::JobStatus::Failed => "failed",
        };
        let mut view = json!({"job_id": job.id, "kind": job.kind, "input": job.input,
            "status": status, "attempts": job.attempts, "created_at": kit::iso(job.created_ms),
            "finished_at": job.finished_ms.map(kit::iso)});
        if let (Some(content_type), Some(size)) = (&job.content_type, job.size) {
            let kept = result_of(job) == ResultState::Kept;
            view["result"] = json!({"content_type": content_type, "size": size,
                "kept_until": job.kept_until_ms.map(kit::iso),
                "state": if kept { "kept" } else { "expired" }});
        }
        if let Some(e) = &job.error {
            view["error"] = job_error(e);
        }
        view
    }

    fn submit(request: &Request, device: Option<String>) -> Result<Response, Response> {
        let settings = settings()?;
        let body: JobBody = kit::body(request)?;
        if body.kind.is_empty() {
            return Err(error(
                422,
                "invalid_body",
                "send {\"kind\", \"input\", \"params\"}",
            ));
        }
        let job = media::submit(&media::JobRequest {
            kind: body.kind,
            input: body.input,
            params: body.params.to_string(),
            keep_ms: keep_ms(settings.result_keep_secs),
            device,
        })
        .map_err(|e| {
            let status = match e.code.as_str() {
                "too_many_jobs" => 429,
                "unknown_input" | "unknown_device" => 404,
                _ => 422,
            };
            let mut refused = error(status, &e.code, &e.message);
            if let Ok(mut body) = serde_json::from_slice::<Value>(&refused.body) {
                body["error"]["help"] = json!(e.help);
                refused.body = body.to_string().into_bytes();
            }
            refused
        })?;
        let submitted = Submitted {
            id: job.id.clone(),
            created_at: job.created_ms,
        };
        kit::commit(vec![put(&job_key(&job.id), &submitted, 0)])?;
        Ok(answer(202, &job_view(&job)))
    }

    fn job(id: &str) -> Result<media::Job, Response> {
        let unknown = || error(404, "unknown_job", "no such job");
        if get::<Submitted>(&job_key(id))?.is_none() {
            return Err(unknown());
        }
        media::get(id).ok_or_else(unknown)
    }

    /// The user's jobs, newest first (the last 100).
    fn jobs() -> Result<Response, Response> {
        let mut found = kit::scan_all::<Submitted>("job/")?;
        found.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        let views: Vec<Value> = found
            .iter()
            .take(100)
            .filter_map(|s| media::get(&s.id))
            .map(|j| job_view(&j))
            .collect();
        Ok(answer(200, &json!({"jobs": views})))
    }

    /// `GET /jobs/{id}/result`: the bytes while kept, as often as asked.
    fn result(id: &str) -> Result<Response, Response> {
        let job = job(id)?;
        match (result_of(&job), &job.result_blob, &job.content_type) {
            (ResultState::Kept, Some(blob), Some(content_type)) => {
                Ok(kit::blob(200, blob, content_type))
            }
            (ResultState::Pending, ..) => Err(error(
                409,
                "job_not_done",
                "the job has not finished; GET /jobs/{id} shows where it stands",
            )),
            (ResultState::Failed, ..) => {
                let why = job
                    .error
                    .as_ref()
                    .map_or_else(String::new, |e| format!(": {} ({})", e.message, e.help));
                Err(error(
                    409,
                    "job_failed",
                    &format!("the job failed, there is no result{why}"),
                ))
            }
            (ResultState::Expired(at), ..) => Err(error(
                410,
                "result_expired",
                &format!(
                    "the result was kept until {} and then deleted; send the job again",
                    kit::iso(at)
                ),
            )),
            (ResultState::Kept, ..) => Err(error(
                410,
                "result_expired",
                "the result is no longer kept; send the job again",
            )),
        }
    }

    fn handle(request: Request) -> Result<Response, Response> {
        let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
        if let ("GET", ["shares", id]) = (request.method.as_str(), segments.as_slice()) {
            return shared(id);
        }
        let caller = request
            .caller
            .clone()
            .ok_or_else(|| error(401, "missing_token", "a token is required"))?;
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
                Ok(kit::blob(200, &b.blob, &b.content_type))
            }
            ("DELETE", ["backups", id]) => {
                let b = backup(id)?;
                kit::commit(vec![remove(&format!("backup/{id}"), b.version)])?;
                blobs::delete(&b.value.blob);
                Ok(kit::no_content())
            }
            ("POST", ["shares"]) => share(&request),
            ("GET", ["shares"]) => shares(),
            ("DELETE", ["shares", id]) => revoke(id),
            ("POST", ["inputs"]) => input(&request),
            ("DELETE", ["inputs", id]) => {
                // Only an input: never a backup's or a share's blob.
                let key = format!("input/{id}");
                let stored = get::<u64>(&key)?
                    .ok_or_else(|| error(404, "unknown_input", "no such input"))?;
                kit::commit(vec![remove(&key, stored.version)])?;
                blobs::delete(id);
                Ok(kit::no_content())
            }
            ("POST", ["jobs"]) => submit(&request, caller.device_id.clone()),
            ("GET", ["jobs"]) => jobs(),
            ("GET", ["jobs", id]) => Ok(answer(200, &job_view(&job(id)?))),
            ("GET", ["jobs", id, "result"]) => result(id),
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
                public_routes: vec![PublicRoute {
                    method: "GET".into(),
                    path_prefix: "/shares/".into(),
                }],
                blob_routes: vec![
                    PublicRoute {
                        method: "PUT".into(),
                        path_prefix: "/backups/".into(),
                    },
                    PublicRoute {
                        method: "POST".into(),
                        path_prefix: "/shares".into(),
                    },
                    PublicRoute {
                        method: "POST".into(),
                        path_prefix: "/inputs".into(),
                    },
                ],
            }
        }

        fn handle(request: Request) -> Response {
            handle(request).unwrap_or_else(|e| e)
        }

        fn on_timer(_user_id: String, name: String) {
            if name.starts_with("share/") {
                // Ended: its bytes go, its record stays to answer 410 for a
                // while, then it is forgotten.
                if let Ok(Some(s)) = get::<Share>(&name) {
                    let now = now();
                    if s.value.ended_at(now).is_some() {
                        blobs::delete(&s.value.blob);
                        if now >= s.value.forget_at() {
                            let _ = kit::commit(vec![remove(&name, s.version)]);
                        } else {
                            timers::schedule(&name, s.value.forget_at());
                        }
                    }
                }
                return;
            }
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
