//! Where blob bytes live, through the `object_store` crate: a folder of the
//! data dir by default (`<data-dir>/blobs`), or an S3-compatible bucket
//! (`s3://bucket[/prefix]`) when several gateway processes share the blobs.
//! For S3 the crate's `AWS_*` environment variables apply (`AWS_ENDPOINT`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ALLOW_HTTP` for a plain-HTTP endpoint on a private network), and
//! settings that are not secret may ride in the URL's query with the same
//! names (`s3://bucket/prefix?endpoint=http://10.0.0.5:9000&region=eu-west-1&allow_http=true`).

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;
use std::path::Path;
use std::sync::Arc;

/// A blob store location that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Neither `file://` nor `s3://`.
    #[error("blob store {0:?}: use file:///absolute/path or s3://bucket[/prefix]")]
    Scheme(String),
    /// The crate refused the settings, or the folder cannot be made.
    #[error("blob store {url:?}: {message}")]
    Open {
        /// The location.
        url: String,
        /// Why.
        message: String,
    },
}

/// Opens the store at `url`, or the folder `blobs` of the data dir when
/// `url` is `None`.
pub fn open(url: Option<&str>, data_dir: &Path) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let fail = |url: &str, message: String| StoreError::Open {
        url: url.to_owned(),
        message,
    };
    let folder = |url: &str, path: &Path| -> Result<Arc<dyn ObjectStore>, StoreError> {
        std::fs::create_dir_all(path).map_err(|e| fail(url, e.to_string()))?;
        let store = LocalFileSystem::new_with_prefix(path)
            .map_err(|e| fail(url, e.to_string()))?
            .with_automatic_cleanup(true);
        Ok(Arc::new(store))
    };
    match url {
        None => folder("<data dir>/blobs", &data_dir.join("blobs")),
        Some(url) => {
            if let Some(path) = url.strip_prefix("file://") {
                folder(url, Path::new(path))
            } else if let Some(rest) = url.strip_prefix("s3://") {
                let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, "true"));
                    if key.contains("secret") || key.contains("token") {
                        return Err(fail(
                            url,
                            format!("{key} belongs in the environment (AWS_*), not in the URL"),
                        ));
                    }
                    let key: AmazonS3ConfigKey = key
                        .parse()
                        .map_err(|_| fail(url, format!("unknown S3 setting {key:?}")))?;
                    builder = builder.with_config(key, value);
                }
                let s3 = builder.build().map_err(|e| fail(url, e.to_string()))?;
                let prefix = prefix.trim_matches('/');
                if prefix.is_empty() {
                    Ok(Arc::new(s3))
                } else {
                    Ok(Arc::new(PrefixStore::new(s3, prefix)))
                }
            } else {
                Err(StoreError::Scheme(url.to_owned()))
            }
        }
    }
}
