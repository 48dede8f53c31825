//! Throw-away PostgreSQL databases for tests and benchmarks.
//!
//! Each run gets a fresh database created next to the one `admin_url` names,
//! so runs never see each other's rows; [`ScratchDatabase::drop_now`] removes it.

use crate::{RegistryError, Result};
use sqlx::{Connection, Executor, PgConnection};

/// A freshly created, uniquely named PostgreSQL database.
#[derive(Debug)]
pub struct ScratchDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    /// Creates `<prefix>_<random>` on the server `admin_url` points at.
    pub async fn create(admin_url: &str, prefix: &str) -> Result<Self> {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(admin_url).await?;
        conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await?;
        conn.close().await?;
        let url = replace_database(admin_url, &name)?;
        Ok(ScratchDatabase {
            admin_url: admin_url.to_owned(),
            name,
            url,
        })
    }

    /// URL of the new database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops the database, closing whatever still uses it.
    pub async fn drop_now(self) -> Result<()> {
        let mut conn = PgConnection::connect(&self.admin_url).await?;
        conn.execute(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name).as_str())
            .await?;
        conn.close().await?;
        Ok(())
    }
}

fn replace_database(url: &str, name: &str) -> Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base
        .find("://")
        .map(|i| i + 3)
        .ok_or_else(|| RegistryError::UnsupportedUrl(url.to_owned()))?;
    let host_end = base[after_scheme..]
        .find('/')
        .map(|i| after_scheme + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..host_end], name);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            super::replace_database("postgres://u@127.0.0.1:5432/test", "x").ok(),
            Some("postgres://u@127.0.0.1:5432/x".to_owned())
        );
        assert_eq!(
            super::replace_database("postgres://127.0.0.1:5432", "x").ok(),
            Some("postgres://127.0.0.1:5432/x".to_owned())
        );
        assert_eq!(
            super::replace_database("postgres://h/d?sslmode=disable", "x").ok(),
            Some("postgres://h/x?sslmode=disable".to_owned())
        );
    }
}
