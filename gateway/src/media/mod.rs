//! Uploaded images (avatars).
//!
//! [`codec`] is the pure part: decoding with limits, transcoding to a
//! network's avatar limits. [`library`] is the service around it: where the
//! CPU work runs (a bounded pool, so image work cannot take every core),
//! each user's storage quota, the retention purge, and the cache of
//! transcoded avatars shared by all deliveries.

pub mod codec;
pub mod library;

pub use codec::*;
pub use library::{MediaLibrary, MediaLimits, UploadError};
