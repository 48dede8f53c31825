//! The image codec: proving the bytes are the image they claim to be, and
//! re-encoding them to fit what a network accepts as an avatar.
//!
//! Pure and synchronous on purpose: callers decide where the CPU work runs
//! (e.g. `spawn_blocking`), and this module stays testable without a server.

use std::borrow::Cow;
use std::io::Cursor;

use image::codecs::gif::GifEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::imageops::FilterType;
use image::{ColorType, DynamicImage, ImageError, ImageFormat, ImageReader, RgbImage};

/// MIME types an upload may declare; the only ones this module decodes or encodes.
pub const ACCEPTED_TYPES: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp"];

/// JPEG qualities tried in turn at each size before shrinking further: the
/// first keeps avatars sharp, the last is still recognisable.
const JPEG_QUALITIES: &[u8] = &[85, 70, 55];
/// Bounds the work one upload can cost when the byte budget is unreachable.
const MAX_SIZE_STEPS: u32 = 10;
/// Below this an avatar is no longer worth sending, so stop shrinking.
const MIN_SIDE: u32 = 16;
/// GIF quantisation speed: `image` defaults to 1, the slowest; 10 is what the
/// gif crate documents as the compromise between speed and quality.
const GIF_SPEED: i32 = 10;

/// Why an image was refused or could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The declared Content-Type is not an image type we handle.
    #[error("unsupported image type {0:?}: send image/png, image/jpeg, image/gif or image/webp")]
    UnsupportedType(String),
    /// The bytes are not a valid image of the declared type.
    #[error("invalid image: {0}")]
    Invalid(String),
    /// Decoding would pass the [`DecodeLimits`] (a decompression bomb, or
    /// simply too many pixels).
    #[error("invalid image: {0}")]
    TooLarge(String),
    /// Even the smallest size and lowest quality tried exceed the byte budget.
    #[error(
        "the image cannot be made to fit in {max_bytes} bytes; upload a smaller or simpler image"
    )]
    CannotFit {
        /// The budget that could not be met.
        max_bytes: u32,
    },
    /// None of the target's formats is one we can produce.
    #[error(
        "cannot produce any of the accepted formats {0:?}; \
         only image/png, image/jpeg, image/gif and image/webp can be produced"
    )]
    NoEncodableFormat(Vec<String>),
}

/// Caps on what decoding may cost, so a small file that declares huge
/// dimensions (a decompression bomb) is refused before any pixel buffer exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted width and height, in pixels.
    pub max_pixels_side: u32,
    /// Largest total allocation the decoder may make, in bytes.
    pub max_alloc_bytes: u64,
}

impl Default for DecodeLimits {
    /// 8192 pixels a side and 256 MiB: an 8192x8192 RGBA image just fits.
    fn default() -> Self {
        Self {
            max_pixels_side: 8192,
            max_alloc_bytes: 256 * 1024 * 1024,
        }
    }
}

/// What [`inspect`] learnt about a valid image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The normalised MIME type, one of [`ACCEPTED_TYPES`].
    pub content_type: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
}

/// What a network accepts as an avatar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvatarTarget {
    /// Largest width and height, in pixels.
    pub max_pixels: u32,
    /// Largest encoded size, in bytes.
    pub max_bytes: u32,
    /// Accepted MIME types, preferred first; empty means any of [`ACCEPTED_TYPES`].
    pub formats: Vec<String>,
}

/// The result of [`transcode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcoded {
    /// MIME type of `data`.
    pub content_type: String,
    /// The encoded image.
    pub data: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// True when `data` differs from the input (resized or re-encoded).
    pub converted: bool,
}

/// Checks that `bytes` are a complete, decodable image of `declared_type`
/// (a Content-Type, parameters and case ignored) within `limits`.
pub fn inspect(
    bytes: &[u8],
    declared_type: &str,
    limits: &DecodeLimits,
) -> Result<ImageInfo, MediaError> {
    let kind = Kind::from_declared(declared_type)?;
    let image = decode(bytes, kind, limits)?;
    Ok(ImageInfo {
        content_type: kind.mime().to_owned(),
        width: image.width(),
        height: image.height(),
        sha256: crate::secrets::sha256_hex(bytes),
    })
}

/// Makes `bytes` (of type `content_type`) fit `target`, returning them
/// untouched when they already do. Decodes with [`DecodeLimits::default`].
///
/// An animated GIF that must be converted keeps only its first frame: no
/// network we push to animates avatars, and re-encoding every frame would
/// multiply the cost and the size.
pub fn transcode(
    bytes: &[u8],
    content_type: &str,
    target: &AvatarTarget,
) -> Result<Transcoded, MediaError> {
    let kind = Kind::from_declared(content_type)?;
    // Decoding even when the bytes may be returned as-is: they are only
    // returned when small in pixels, so the check is cheap and we never pass
    // on a file that merely has a valid header.
    let image = decode(bytes, kind, &DecodeLimits::default())?;
    let side = target.max_pixels.max(1);
    let accepted = target.formats.is_empty()
        || target
            .formats
            .iter()
            .any(|f| Kind::from_mime(f) == Some(kind));
    let max_bytes = usize::try_from(target.max_bytes).unwrap_or(usize::MAX);
    if accepted && image.width() <= side && image.height() <= side && bytes.len() <= max_bytes {
        return Ok(Transcoded {
            content_type: kind.mime().to_owned(),
            data: bytes.to_vec(),
            width: image.width(),
            height: image.height(),
            converted: false,
        });
    }

    let out = if target.formats.is_empty() {
        kind
    } else {
        target
            .formats
            .iter()
            .find_map(|f| Kind::from_mime(f))
            .ok_or_else(|| MediaError::NoEncodableFormat(target.formats.clone()))?
    };
    let qualities: &[u8] = match out {
        Kind::Jpeg => JPEG_QUALITIES,
        // Only JPEG has a quality knob (WebP is lossless in `image`), so
        // other formats shrink in pixels only.
        Kind::Png | Kind::Gif | Kind::WebP => &[0],
    };

    let mut bound = side.min(image.width().max(image.height()));
    for _ in 0..MAX_SIZE_STEPS {
        let resized = if image.width() <= bound && image.height() <= bound {
            Cow::Borrowed(&image)
        } else {
            // Always from the original, so repeated steps do not compound blur.
            Cow::Owned(image.resize(bound, bound, FilterType::Lanczos3))
        };
        for &quality in qualities {
            let data = encode(&resized, out, quality)?;
            if data.len() <= max_bytes {
                return Ok(Transcoded {
                    content_type: out.mime().to_owned(),
                    converted: data != bytes,
                    data,
                    width: resized.width(),
                    height: resized.height(),
                });
            }
        }
        if bound <= MIN_SIDE {
            break;
        }
        bound = (bound / 4 * 3).max(MIN_SIDE);
    }
    Err(MediaError::CannotFit {
        max_bytes: target.max_bytes,
    })
}

/// The formats we both decode and encode; an enum so every match is exhaustive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Png,
    Jpeg,
    Gif,
    WebP,
}

impl Kind {
    /// Parses a MIME type, ignoring parameters and case as HTTP requires.
    fn from_mime(mime: &str) -> Option<Self> {
        let essence = mime.split(';').next().unwrap_or_default().trim();
        [Self::Png, Self::Jpeg, Self::Gif, Self::WebP]
            .into_iter()
            .find(|kind| essence.eq_ignore_ascii_case(kind.mime()))
    }

    fn from_declared(declared: &str) -> Result<Self, MediaError> {
        Self::from_mime(declared).ok_or_else(|| MediaError::UnsupportedType(declared.to_owned()))
    }

    fn mime(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Gif => "image/gif",
            Self::WebP => "image/webp",
        }
    }

    fn format(self) -> ImageFormat {
        match self {
            Self::Png => ImageFormat::Png,
            Self::Jpeg => ImageFormat::Jpeg,
            Self::Gif => ImageFormat::Gif,
            Self::WebP => ImageFormat::WebP,
        }
    }
}

/// Decodes all of `bytes` as `kind`, refusing content that sniffs as another
/// format: a client that mislabels its upload would otherwise have it stored
/// and served under the wrong Content-Type.
fn decode(bytes: &[u8], kind: Kind, limits: &DecodeLimits) -> Result<DynamicImage, MediaError> {
    let actual = image::guess_format(bytes).map_err(|_| {
        MediaError::Invalid(format!(
            "the bytes are not a recognisable {} image",
            kind.mime()
        ))
    })?;
    if actual != kind.format() {
        // Debug names ("Png", "Tiff") upper-cased read as format names.
        let name = format!("{actual:?}").to_uppercase();
        return Err(MediaError::Invalid(format!(
            "the bytes are a {name} image, not {}",
            kind.mime()
        )));
    }
    // `image::Limits` is non-exhaustive, so it cannot be built literally.
    let mut caps = image::Limits::default();
    caps.max_image_width = Some(limits.max_pixels_side);
    caps.max_image_height = Some(limits.max_pixels_side);
    caps.max_alloc = Some(limits.max_alloc_bytes);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), kind.format());
    reader.limits(caps);
    // `decode` reserves the whole output buffer against the limits before
    // reading pixel data, which is what stops a bomb early.
    reader.decode().map_err(|e| match e {
        ImageError::Limits(e) => MediaError::TooLarge(format!(
            "the image is too large to decode (at most {side}x{side} pixels, {mib} MiB): {e}",
            side = limits.max_pixels_side,
            mib = limits.max_alloc_bytes / (1024 * 1024),
        )),
        e => MediaError::Invalid(format!("the image does not decode: {e}")),
    })
}

/// Decodes `bytes` of type `content_type` within `limits`, for callers
/// that work on the pixels themselves (media jobs).
pub fn decode_image(
    bytes: &[u8],
    content_type: &str,
    limits: &DecodeLimits,
) -> Result<DynamicImage, MediaError> {
    decode(bytes, Kind::from_declared(content_type)?, limits)
}

/// Encodes `image` as `content_type` (one of [`ACCEPTED_TYPES`]; JPEG at
/// quality 85); the type as spelt here.
pub fn encode_image(
    image: &DynamicImage,
    content_type: &str,
) -> Result<(&'static str, Vec<u8>), MediaError> {
    let kind = Kind::from_declared(content_type)?;
    Ok((kind.mime(), encode(image, kind, JPEG_QUALITIES[0])?))
}

/// Encodes `image` as `kind`; `quality` only matters for JPEG.
fn encode(image: &DynamicImage, kind: Kind, quality: u8) -> Result<Vec<u8>, MediaError> {
    let mut out = Vec::new();
    let written = match kind {
        Kind::Png => eight_bit(image).write_with_encoder(PngEncoder::new(&mut out)),
        Kind::Jpeg => flatten_on_white(image)
            .write_with_encoder(JpegEncoder::new_with_quality(&mut out, quality)),
        // The GIF encoder converts nothing itself and quantises from RGBA.
        Kind::Gif => DynamicImage::ImageRgba8(image.to_rgba8())
            .write_with_encoder(GifEncoder::new_with_speed(&mut out, GIF_SPEED)),
        Kind::WebP => eight_bit(image).write_with_encoder(WebPEncoder::new_lossless(&mut out)),
    };
    // An image that decoded but will not re-encode is, to the uploader, an
    // image we cannot use: report it as such rather than as a server fault.
    written.map_err(|e| {
        MediaError::Invalid(format!(
            "the image cannot be re-encoded as {}: {e}",
            kind.mime()
        ))
    })?;
    Ok(out)
}

/// Avatars gain nothing from 16-bit or float channels, and the WebP encoder
/// takes only 8-bit input.
fn eight_bit(image: &DynamicImage) -> Cow<'_, DynamicImage> {
    match image.color() {
        ColorType::L8 | ColorType::La8 | ColorType::Rgb8 | ColorType::Rgba8 => Cow::Borrowed(image),
        c if c.has_alpha() => Cow::Owned(DynamicImage::ImageRgba8(image.to_rgba8())),
        _ => Cow::Owned(DynamicImage::ImageRgb8(image.to_rgb8())),
    }
}

/// JPEG has no alpha; simply dropping it would show whatever colour the
/// transparent pixels happen to hold (often black), so composite onto white.
fn flatten_on_white(image: &DynamicImage) -> DynamicImage {
    if !image.color().has_alpha() {
        return DynamicImage::ImageRgb8(image.to_rgb8());
    }
    let rgba = image.to_rgba8();
    let mut rgb = RgbImage::new(rgba.width(), rgba.height());
    for (dst, src) in rgb.pixels_mut().zip(rgba.pixels()) {
        let alpha = u16::from(src.0[3]);
        for (d, s) in dst.0.iter_mut().zip(src.0) {
            let blended = (u16::from(s) * alpha + 255 * (255 - alpha) + 127) / 255;
            *d = u8::try_from(blended).unwrap_or(u8::MAX);
        }
    }
    DynamicImage::ImageRgb8(rgb)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use image::{Rgba, RgbaImage};

    fn png(width: u32, height: u32, pixel: impl FnMut(u32, u32) -> Rgba<u8>) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        let image = DynamicImage::ImageRgba8(RgbaImage::from_fn(width, height, pixel));
        image.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn gradient(width: u32, height: u32) -> Vec<u8> {
        png(width, height, |x, y| {
            Rgba([x as u8, y as u8, (x + y) as u8, 255])
        })
    }

    fn target(max_pixels: u32, max_bytes: u32, formats: &[&str]) -> AvatarTarget {
        let formats = formats.iter().map(|f| (*f).to_owned()).collect();
        AvatarTarget {
            max_pixels,
            max_bytes,
            formats,
        }
    }

    fn check(bytes: &[u8], declared: &str) -> Result<ImageInfo, MediaError> {
        inspect(bytes, declared, &DecodeLimits::default())
    }

    fn invalid(bytes: &[u8], declared: &str) -> String {
        match check(bytes, declared) {
            Err(MediaError::Invalid(message)) => message,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn inspect_reports_type_dimensions_and_digest() {
        let info = check(&gradient(640, 480), "Image/PNG; charset=x").unwrap();
        assert_eq!(info.content_type, "image/png");
        assert_eq!((info.width, info.height), (640, 480));
        assert_eq!(info.sha256.len(), 64);
        assert_eq!(info.sha256, info.sha256.to_lowercase());
    }

    #[test]
    fn inspect_refuses_mislabelled_unsupported_truncated_and_garbage_bytes() {
        let bytes = gradient(32, 32);
        assert_eq!(
            invalid(&bytes, "image/jpeg"),
            "the bytes are a PNG image, not image/jpeg"
        );
        for declared in ["image/bmp", "text/plain"] {
            let result = check(&bytes, declared);
            assert!(matches!(result, Err(MediaError::UnsupportedType(t)) if t == declared));
        }
        invalid(b"definitely not an image", "image/png");
        let message = invalid(&bytes[..bytes.len() / 2], "image/png");
        assert!(
            message.starts_with("the image does not decode"),
            "{message}"
        );
    }

    /// A decompression bomb: a 1x1 PNG whose header claims `side` x `side`
    /// pixels, with a valid header CRC.
    pub(crate) fn png_bomb(side: u32) -> Vec<u8> {
        let mut bytes = gradient(1, 1);
        // IHDR chunk: type at 12, width at 16, height at 20, CRC (of type+data) at 29.
        assert_eq!(&bytes[12..16], b"IHDR");
        bytes[16..24].copy_from_slice(&[side.to_be_bytes(); 2].concat());
        let mut crc = !0u32;
        for &byte in &bytes[12..29] {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
            }
        }
        bytes[29..33].copy_from_slice(&(!crc).to_be_bytes());
        bytes
    }

    #[test]
    fn inspect_refuses_a_decompression_bomb_without_allocating_it() {
        let bytes = png_bomb(100_000);
        // Refused from the header, before any pixel buffer exists.
        let message = match check(&bytes, "image/png") {
            Err(MediaError::TooLarge(message)) => message,
            other => panic!("expected TooLarge, got {other:?}"),
        };
        assert!(message.contains("too large"), "{message}");
    }

    #[test]
    fn transcode_shrinks_a_large_png_into_a_small_jpeg() {
        let jpeg = target(96, 65536, &["image/jpeg"]);
        let out = transcode(&gradient(640, 480), "image/png", &jpeg).unwrap();
        assert_eq!(out.content_type, "image/jpeg");
        assert_eq!((out.width, out.height), (96, 72));
        assert!(out.data.len() <= 65536 && out.converted);
        let info = check(&out.data, "image/jpeg").unwrap();
        assert_eq!((info.width, info.height), (96, 72));
    }

    #[test]
    fn transcode_returns_a_fitting_image_untouched() {
        let bytes = gradient(64, 48);
        for formats in [&["image/jpeg", "image/png"][..], &[]] {
            let out = transcode(&bytes, "image/png", &target(96, 65536, formats)).unwrap();
            assert!(out.data == bytes && !out.converted);
            assert_eq!(out.content_type, "image/png");
            assert_eq!((out.width, out.height), (64, 48));
        }
    }

    #[test]
    fn transcode_produces_every_accepted_format() {
        let bytes = gradient(200, 100);
        for &format in ACCEPTED_TYPES {
            let out = transcode(&bytes, "image/png", &target(50, 1 << 20, &[format])).unwrap();
            let info = check(&out.data, &out.content_type).unwrap();
            assert_eq!(info.content_type, format);
            assert_eq!((info.width, info.height), (50, 25), "{format}");
        }
    }

    #[test]
    fn transcode_to_jpeg_puts_transparency_on_white() {
        let clear = png(8, 8, |_, _| Rgba([0, 0, 0, 0]));
        let out = transcode(&clear, "image/png", &target(8, 4096, &["image/jpeg"])).unwrap();
        let decoded = image::load_from_memory(&out.data).unwrap().to_rgb8();
        assert!(decoded.pixels().all(|p| p.0.iter().all(|&c| c > 240)));
    }

    #[test]
    fn transcode_of_noise_either_fits_the_budget_or_says_it_cannot() {
        let mut state = 0x2545_f491_u32;
        let noise = png(1024, 1024, |_, _| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let [r, g, b, _] = state.to_le_bytes();
            Rgba([r, g, b, 255])
        });
        match transcode(&noise, "image/png", &target(1024, 2000, &["image/jpeg"])) {
            Ok(out) => {
                assert!(out.data.len() <= 2000 && out.converted);
                let info = check(&out.data, "image/jpeg").unwrap();
                assert_eq!((info.width, info.height), (out.width, out.height));
            }
            Err(MediaError::CannotFit { max_bytes }) => assert_eq!(max_bytes, 2000),
            Err(other) => panic!("unexpected error: {other}"),
        }
    }

    #[test]
    fn transcode_without_an_encodable_format_says_so() {
        let tiff = target(96, 65536, &["image/tiff"]);
        let result = transcode(&gradient(640, 480), "image/png", &tiff);
        assert!(matches!(result, Err(MediaError::NoEncodableFormat(f)) if f == ["image/tiff"]));
    }
}
