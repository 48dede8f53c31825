//! The host side of the plugin imports: outbound HTTP limited to granted
//! origins, logging, clock.
//!
//! Errors of the HTTP import reach users (a connector passes them on, and
//! they end up as a delivery's `last_error`), so they name at most the
//! origin: a URL's path, query and userinfo may hold a secret (a webhook
//! token, an API key).

use super::types::{HttpFailure, HttpRequest, HttpResponse, LogLevel};
use super::CallState;
use std::time::{Duration, Instant};

/// Redirects followed (each re-checked against the grant).
const MAX_REDIRECTS: usize = 5;

/// `scheme://host:port` of a URL, lowercase, with the scheme's default port.
pub fn origin_of(url: &reqwest::Url) -> Option<String> {
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    Some(format!(
        "{}://{}:{}",
        url.scheme(),
        host.to_ascii_lowercase(),
        port
    ))
}

impl CallState {
    /// Refuses URLs outside the grant, and remembers the refusal: whatever
    /// the connector makes of it, the call failed on the operator's setup.
    fn check_granted(&mut self, url: &reqwest::Url) -> Result<(), HttpFailure> {
        let origin = origin_of(url).ok_or_else(|| {
            HttpFailure::Denied(format!("a {}: URL has no host or port", url.scheme()))
        })?;
        if self.grants.allowed_origins.iter().any(|o| o == &origin) {
            Ok(())
        } else {
            let why = format!(
                "{origin} is not granted to module {}",
                self.grants.module_id
            );
            self.denied = Some(why.clone());
            Err(HttpFailure::Denied(why))
        }
    }

    fn remaining(&self) -> Result<Duration, HttpFailure> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(HttpFailure::Timeout)
        } else {
            Ok(left)
        }
    }

    /// Sends one request of the plugin: granted origins only, within the
    /// module's rate limit and the call's deadline.
    pub(super) fn send_http(&mut self, request: HttpRequest) -> Result<HttpResponse, HttpFailure> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| HttpFailure::Failed(format!("bad method {:?}", request.method)))?;
        let mut url = reqwest::Url::parse(&request.url)
            .map_err(|e| HttpFailure::Failed(format!("bad URL: {e}")))?;
        let prepaid = std::mem::take(&mut self.outbound.prepaid);
        if let Some(limiter) = self.outbound.limiter.clone().filter(|_| !prepaid) {
            while let Err(wait) = limiter.check_blocking(self.outbound.runtime.as_ref()) {
                // A short wait is served here, within the call's deadline; a
                // long one goes back to the caller (a delivery pauses the module).
                if wait > self.remaining()? / 2 {
                    let secs = wait.as_millis().div_ceil(1000).max(1);
                    return Err(HttpFailure::RateLimited(
                        u32::try_from(secs).unwrap_or(u32::MAX),
                    ));
                }
                std::thread::sleep(wait);
            }
        }
        if let Some(answer) = self.outbound.in_process.clone() {
            self.check_granted(&url)?;
            return Ok(answer(&request));
        }
        let runtime = self
            .outbound
            .runtime
            .clone()
            .ok_or_else(|| HttpFailure::Failed("no async runtime for outbound HTTP".into()))?;
        let mut method = method;
        let mut body = request.body;
        for _ in 0..=MAX_REDIRECTS {
            self.check_granted(&url)?;
            let timeout = self.remaining()?;
            let mut builder = self
                .outbound
                .client
                .request(method.clone(), url.clone())
                .timeout(timeout)
                .body(body.clone());
            for (name, value) in &request.headers {
                builder = builder.header(name.as_str(), value.as_str());
            }
            let cap = self.outbound.max_response_bytes;
            let exchange = async move {
                let mut response = builder.send().await?;
                let status = response.status().as_u16();
                let headers: Vec<(String, String)> = response
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                let mut data = Vec::new();
                while let Some(chunk) = response.chunk().await? {
                    if data.len() + chunk.len() > cap {
                        return Ok(Err(HttpFailure::TooLarge));
                    }
                    data.extend_from_slice(&chunk);
                }
                Ok::<_, reqwest::Error>(Ok(HttpResponse {
                    status,
                    headers,
                    body: data,
                }))
            };
            // reqwest's timeout covers the body too; the outer one makes the
            // bound on this blocking wait plain whatever the client does.
            let answer = runtime.block_on(tokio::time::timeout(timeout, exchange));
            let response = match answer {
                Err(_elapsed) => return Err(HttpFailure::Timeout),
                Ok(Ok(result)) => result?,
                Ok(Err(e)) if e.is_timeout() => return Err(HttpFailure::Timeout),
                Ok(Err(e)) => return Err(HttpFailure::Failed(failure(&url, e))),
            };
            if (300..400).contains(&response.status) && response.status != 304 {
                let location = response
                    .headers
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case("location"))
                    .map(|(_, value)| value.clone());
                if let Some(location) = location {
                    url = url
                        .join(&location)
                        .map_err(|e| HttpFailure::Failed(format!("bad redirect location: {e}")))?;
                    if response.status == 303
                        || (response.status != 307
                            && response.status != 308
                            && method == reqwest::Method::POST)
                    {
                        method = reqwest::Method::GET;
                        body = Vec::new();
                    }
                    continue;
                }
            }
            return Ok(response);
        }
        Err(HttpFailure::Failed(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }
}

/// A failed exchange as text for the plugin: the origin and the error with
/// its causes (connection refused, DNS, TLS), never the URL's path, query or
/// userinfo, which reqwest's own text carries.
fn failure(url: &reqwest::Url, error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = match origin_of(url) {
        Some(origin) => format!("{origin}: {error}"),
        None => error.to_string(),
    };
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl CallState {
    /// Writes a plugin's log line, escaped, tagged with its module.
    pub(super) fn log(&self, level: LogLevel, message: &str) {
        let module = self.grants.module_id.as_str();
        let message = crate::text::log_line(message);
        match level {
            LogLevel::Debug => tracing::debug!(module, "{message}"),
            LogLevel::Info => tracing::info!(module, "{message}"),
            LogLevel::Warn => tracing::warn!(module, "{message}"),
            LogLevel::Error => tracing::error!(module, "{message}"),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub(super) fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}
