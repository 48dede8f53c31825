//! Media jobs (T2), the pure part: what a job asks for ([`Operation`],
//! parsed from its kind and JSON params with their limits checked) and
//! the work itself ([`run`]): an image thumbnail, a format conversion, a
//! resize, and a document operation (Markdown to HTML). A failure is a
//! [`JobError`]: a code, what was wrong and what to try.
//!
//! Synchronous and CPU-bound on purpose: the job runner decides where it
//! runs (an isolated worker process with a deadline and a memory cap).

pub mod jobs;
pub mod worker;

use crate::media::codec::{self, DecodeLimits, MediaError};
use image::imageops::FilterType;
use serde::Deserialize;
use serde_json::Value;

/// The largest side a thumbnail or resize may ask for.
pub const MAX_OUTPUT_SIDE: u32 = 4096;
/// The largest Markdown document converted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Scaled down to fit a `side` x `side` box, aspect kept, as PNG (or
    /// JPEG for a JPEG input).
    Thumbnail {
        /// The box's side, 16 to [`MAX_OUTPUT_SIDE`].
        side: u32,
    },
    /// The same pixels in another image format.
    Convert {
        /// One of the image types the codec produces.
        to: String,
    },
    /// Scaled to exactly `width` x `height` (aspect not kept), same format.
    Resize {
        /// 1 to [`MAX_OUTPUT_SIDE`].
        width: u32,
        /// 1 to [`MAX_OUTPUT_SIDE`].
        height: u32,
    },
    /// A Markdown document as an HTML fragment; raw HTML in the input is
    /// escaped, never passed through.
    MarkdownToHtml,
}

/// A job's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Its media type.
    pub content_type: String,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// Why a job failed, for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobError {
    /// Stable, for programs: `invalid_params`, `unsupported_input`,
    /// `input_too_large`, `corrupt_input`, `deadline_exceeded`,
    /// `memory_exceeded`, `worker_failed`.
    pub code: String,
    /// What was wrong.
    pub message: String,
    /// What to try.
    pub help: String,
}

impl JobError {
    /// A failure with its code, message and help text.
    pub fn new(code: &str, message: impl Into<String>, help: impl Into<String>) -> Self {
        JobError {
            code: code.to_owned(),
            message: message.into(),
            help: help.into(),
        }
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} ({})", self.code, self.message, self.help)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThumbnailParams {
    #[serde(default = "default_side")]
    side: u32,
}

fn default_side() -> u32 {
    256
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConvertParams {
    to: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResizeParams {
    width: u32,
    height: u32,
}

fn params<T: serde::de::DeserializeOwned>(kind: &str, params: &Value) -> Result<T, JobError> {
    let params = if params.is_null() {
        Value::Object(Default::default())
    } else {
        params.clone()
    };
    serde_json::from_value(params).map_err(|e| {
        JobError::new(
            "invalid_params",
            format!("the params of a {kind} job: {e}"),
            "see the job kinds and their params in the API documentation",
        )
    })
}

fn side_in_range(what: &str, n: u32, min: u32) -> Result<(), JobError> {
    if (min..=MAX_OUTPUT_SIDE).contains(&n) {
        Ok(())
    } else {
        Err(JobError::new(
            "invalid_params",
            format!("{what} is {n}; it must be {min} to {MAX_OUTPUT_SIDE} pixels"),
            format!("ask for {min} to {MAX_OUTPUT_SIDE} pixels"),
        ))
    }
}

impl Operation {
    /// The job kinds, as requests name them.
    pub const KINDS: [&'static str; 4] = ["thumbnail", "convert", "resize", "markdown-to-html"];

    /// Parses a job's `kind` and `params`, checking their limits.
    pub fn parse(kind: &str, raw: &Value) -> Result<Self, JobError> {
        match kind {
            "thumbnail" => {
                let p: ThumbnailParams = params(kind, raw)?;
                side_in_range("side", p.side, 16)?;
                Ok(Operation::Thumbnail { side: p.side })
            }
            "convert" => {
                let p: ConvertParams = params(kind, raw)?;
                if !codec::ACCEPTED_TYPES.contains(&p.to.as_str()) {
                    return Err(JobError::new(
                        "invalid_params",
                        format!("cannot convert to {:?}", p.to),
                        format!("convert to one of {}", codec::ACCEPTED_TYPES.join(", ")),
                    ));
                }
                Ok(Operation::Convert { to: p.to })
            }
            "resize" => {
                let p: ResizeParams = params(kind, raw)?;
                side_in_range("width", p.width, 1)?;
                side_in_range("height", p.height, 1)?;
                Ok(Operation::Resize {
                    width: p.width,
                    height: p.height,
                })
            }
            "markdown-to-html" => {
                let _: serde_json::Map<String, Value> = params(kind, raw)?;
                Ok(Operation::MarkdownToHtml)
            }
            other => Err(JobError::new(
                "invalid_params",
                format!("{other:?} is not a kind of job"),
                format!("use one of {}", Self::KINDS.join(", ")),
            )),
        }
    }
}

fn image_error(e: MediaError, limits: &DecodeLimits) -> JobError {
    match e {
        MediaError::UnsupportedType(t) => JobError::new(
            "unsupported_input",
            format!("{t:?} is not an image type this job reads"),
            format!("send {}", codec::ACCEPTED_TYPES.join(", ")),
        ),
        MediaError::TooLarge(why) => JobError::new(
            "input_too_large",
            why,
            format!(
                "images may be at most {side}x{side} pixels; scale it down or crop it before sending",
                side = limits.max_pixels_side
            ),
        ),
        MediaError::Invalid(why) => JobError::new(
            "corrupt_input",
            why,
            "the file is damaged or not of the type it was sent as: export it again from the app that made it, and send it with its real Content-Type",
        ),
        e => JobError::new(
            "worker_failed",
            e.to_string(),
            "try again; if it fails again, try another format",
        ),
    }
}

/// Runs `op` on `input` (of `content_type`), decoding within `limits`.
pub fn run(
    op: &Operation,
    input: &[u8],
    content_type: &str,
    limits: &DecodeLimits,
) -> Result<Output, JobError> {
    let image_job = |transform: &dyn Fn(image::DynamicImage) -> image::DynamicImage,
                     to: &str|
     -> Result<Output, JobError> {
        let image =
            codec::decode_image(input, content_type, limits).map_err(|e| image_error(e, limits))?;
        let (content_type, data) =
            codec::encode_image(&transform(image), to).map_err(|e| image_error(e, limits))?;
        Ok(Output {
            content_type: content_type.to_owned(),
            data,
        })
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    match op {
        Operation::Thumbnail { side } => {
            let to = if essence.eq_ignore_ascii_case("image/jpeg") {
                "image/jpeg"
            } else {
                "image/png"
            };
            image_job(
                &|image| {
                    if image.width() <= *side && image.height() <= *side {
                        image
                    } else {
                        image.thumbnail(*side, *side)
                    }
                },
                to,
            )
        }
        Operation::Convert { to } => image_job(&|image| image, to),
        Operation::Resize { width, height } => image_job(
            &|image| image.resize_exact(*width, *height, FilterType::Triangle),
            essence,
        ),
        Operation::MarkdownToHtml => markdown_to_html(input, essence),
    }
}

fn markdown_to_html(input: &[u8], essence: &str) -> Result<Output, JobError> {
    use pulldown_cmark::{Event, Options, Parser};
    if !["text/markdown", "text/plain"]
        .iter()
        .any(|t| essence.eq_ignore_ascii_case(t))
    {
        return Err(JobError::new(
            "unsupported_input",
            format!("{essence:?} is not a Markdown document"),
            "send the document as text/markdown (UTF-8)",
        ));
    }
    if input.len() > MAX_DOCUMENT_BYTES {
        return Err(JobError::new(
            "input_too_large",
            format!(
                "the document is {} bytes; at most {MAX_DOCUMENT_BYTES}",
                input.len()
            ),
            "split it into smaller documents",
        ));
    }
    let text = std::str::from_utf8(input).map_err(|e| {
        JobError::new(
            "corrupt_input",
            format!("the document is not UTF-8: {e}"),
            "save it as UTF-8 text and send it again",
        )
    })?;
    // Raw HTML in the input becomes text: the result is safe to show.
    let events = Parser::new_ext(text, Options::all()).map(|event| match event {
        Event::Html(html) | Event::InlineHtml(html) => Event::Text(html),
        other => other,
    });
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events);
    Ok(Output {
        content_type: "text/html; charset=utf-8".to_owned(),
        data: html.into_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Cursor;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        });
        let mut out = Vec::new();
        image::DynamicImage::ImageRgb8(image)
            .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    fn size_of(output: &Output) -> (u32, u32) {
        let image = image::load_from_memory(&output.data).unwrap();
        (image.width(), image.height())
    }

    #[test]
    fn a_thumbnail_fits_its_box_and_keeps_the_aspect() {
        let op = Operation::parse("thumbnail", &json!({"side": 128})).unwrap();
        let out = run(&op, &png(640, 480), "image/png", &DecodeLimits::default()).unwrap();
        assert_eq!(out.content_type, "image/png");
        assert_eq!(size_of(&out), (128, 96));
    }

    #[test]
    fn convert_and_resize() {
        let limits = DecodeLimits::default();
        let op = Operation::parse("convert", &json!({"to": "image/jpeg"})).unwrap();
        let out = run(&op, &png(40, 30), "image/png", &limits).unwrap();
        assert_eq!(out.content_type, "image/jpeg");
        assert_eq!(size_of(&out), (40, 30));
        let op = Operation::parse("resize", &json!({"width": 10, "height": 50})).unwrap();
        let out = run(&op, &png(40, 30), "image/png", &limits).unwrap();
        assert_eq!(
            (out.content_type.as_str(), size_of(&out)),
            ("image/png", (10, 50))
        );
    }

    #[test]
    fn a_decompression_bomb_fails_with_a_reason_and_help() {
        // A PNG that declares 100,000 x 100,000 pixels in a few bytes.
        let bomb = crate::media::codec::tests::png_bomb(100_000);
        let op = Operation::parse("thumbnail", &Value::Null).unwrap();
        let e = run(&op, &bomb, "image/png", &DecodeLimits::default()).unwrap_err();
        assert_eq!(e.code, "input_too_large", "{e}");
        assert!(e.help.contains("8192x8192"), "{e}");
    }

    #[test]
    fn a_corrupt_file_fails_with_a_reason_and_help() {
        let mut broken = png(64, 64);
        broken.truncate(broken.len() / 2);
        let op = Operation::parse("thumbnail", &Value::Null).unwrap();
        let e = run(&op, &broken, "image/png", &DecodeLimits::default()).unwrap_err();
        assert_eq!(e.code, "corrupt_input", "{e}");
        assert!(e.help.contains("export it again"), "{e}");
        let e = run(
            &op,
            b"%PDF-1.7",
            "application/pdf",
            &DecodeLimits::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, "unsupported_input", "{e}");
    }

    #[test]
    fn params_are_checked() {
        for (kind, params) in [
            ("thumbnail", json!({"side": 8})),
            ("thumbnail", json!({"side": 100_000})),
            ("thumbnail", json!({"size": 100})),
            ("convert", json!({"to": "image/bmp"})),
            ("resize", json!({"width": 0, "height": 10})),
            ("resize", json!({"width": "ten", "height": 10})),
            ("transcode-video", json!({})),
        ] {
            let e = Operation::parse(kind, &params).unwrap_err();
            assert_eq!(e.code, "invalid_params", "{kind} {params}");
            assert!(!e.help.is_empty());
        }
    }

    #[test]
    fn markdown_becomes_html_with_raw_html_escaped() {
        let op = Operation::parse("markdown-to-html", &Value::Null).unwrap();
        let out = run(
            &op,
            b"# Notes\n\n*one* <script>alert(1)</script>",
            "text/markdown",
            &DecodeLimits::default(),
        )
        .unwrap();
        let html = String::from_utf8(out.data).unwrap();
        assert!(html.contains("<h1>Notes</h1>"), "{html}");
        assert!(html.contains("<em>one</em>"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        let e = run(
            &op,
            &[0xff, 0xfe],
            "text/markdown",
            &DecodeLimits::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, "corrupt_input");
    }
}
