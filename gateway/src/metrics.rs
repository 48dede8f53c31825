//! Prometheus metrics of one gateway instance (its own registry, so several
//! gateways in one test process do not mix their counts).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The instance's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by method, route and status.
    pub http_requests: IntCounterVec,
    /// HTTP latency by route.
    pub http_latency: HistogramVec,
    /// Change reports by first status (`pending`, `suppressed`, `delivered`).
    pub changes: IntCounterVec,
    /// Delivery attempts by module and outcome.
    pub deliveries: IntCounterVec,
    /// Seconds from a change's commit to its delivery, by module.
    pub delivery_latency: HistogramVec,
    /// Seconds a delivery worker spends per stage: `claim` (a batch claimed
    /// with its bindings read), `push` (one connector call), `record` (a
    /// batch of outcomes committed and announced).
    pub delivery_stage: HistogramVec,
    /// Deliveries per claimed batch and per recorded batch, by stage.
    pub delivery_batch: HistogramVec,
    /// Deliveries not yet final (all processes sharing the database).
    pub queue_depth: IntGauge,
    /// Image decodes and transcodes run, by kind (`inspect`, `transcode`).
    pub image_jobs: IntCounterVec,
}

/// Errors registering metrics (a programming error: duplicate names).
#[derive(Debug, thiserror::Error)]
#[error("metrics setup failed: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new("gateway_http_requests_total", "HTTP requests answered"),
            &["method", "route", "status"],
        )?;
        let http_latency = HistogramVec::new(
            HistogramOpts::new("gateway_http_request_duration_seconds", "HTTP latency"),
            &["route"],
        )?;
        let changes = IntCounterVec::new(
            Opts::new("gateway_changes_total", "Change reports recorded"),
            &["status"],
        )?;
        let deliveries = IntCounterVec::new(
            Opts::new("gateway_deliveries_total", "Delivery attempts by outcome"),
            &["module", "outcome"],
        )?;
        let delivery_latency = HistogramVec::new(
            HistogramOpts::new(
                "gateway_delivery_latency_seconds",
                "From a change's commit to its delivery",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
            &["module"],
        )?;
        let delivery_stage = HistogramVec::new(
            HistogramOpts::new(
                "gateway_delivery_stage_seconds",
                "Time a delivery worker spends per stage (claim, push, record)",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                5.0,
            ]),
            &["stage"],
        )?;
        let delivery_batch = HistogramVec::new(
            HistogramOpts::new(
                "gateway_delivery_batch_size",
                "Deliveries per claimed or recorded batch",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            &["stage"],
        )?;
        let queue_depth =
            IntGauge::new("gateway_delivery_queue_depth", "Deliveries not yet final")?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_latency.clone()))?;
        registry.register(Box::new(changes.clone()))?;
        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(delivery_latency.clone()))?;
        registry.register(Box::new(delivery_stage.clone()))?;
        registry.register(Box::new(delivery_batch.clone()))?;
        let image_jobs = IntCounterVec::new(
            Opts::new(
                "gateway_image_jobs_total",
                "Image decodes and transcodes run",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(image_jobs.clone()))?;
        Ok(Metrics {
            registry,
            http_requests,
            http_latency,
            changes,
            deliveries,
            delivery_latency,
            delivery_stage,
            delivery_batch,
            queue_depth,
            image_jobs,
        })
    }

    /// Everything in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}
