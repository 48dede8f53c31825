//! Users (S1) and their login sessions.

use crate::{from_millis, to_millis, Registry, RegistryError, Result, User, UserCredentials};
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;

fn user_from_row(row: &AnyRow) -> Result<User> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        created_at: from_millis(row.try_get("created_at")?)?,
    })
}

impl Registry {
    /// Stores a new user; `Conflict{users_username_key}` when the name is taken.
    pub async fn create_user(
        &self,
        id: &str,
        username: &str,
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<User> {
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(username)
        .bind(password_hash)
        .bind(to_millis(now))
        .execute(&self.pool)
        .await?;
        Ok(User {
            id: id.to_owned(),
            username: username.to_owned(),
            created_at: from_millis(to_millis(now))?,
        })
    }

    /// The user with this name and its password hash, for a login check.
    pub async fn user_credentials(&self, username: &str) -> Result<UserCredentials> {
        let row = sqlx::query(
            "SELECT id, username, created_at, password_hash FROM users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(RegistryError::NotFound)?;
        Ok(UserCredentials {
            user: user_from_row(&row)?,
            password_hash: row.try_get("password_hash")?,
        })
    }

    /// Stores a session by the hash of its token.
    pub async fn create_session(
        &self,
        token_hash: &str,
        user_id: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(to_millis(now))
        .bind(to_millis(expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The user a live session belongs to; `NotFound` if unknown or expired.
    pub async fn session_user(&self, token_hash: &str, now: DateTime<Utc>) -> Result<User> {
        let row = sqlx::query(
            "SELECT u.id, u.username, u.created_at FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(token_hash)
        .bind(to_millis(now))
        .fetch_optional(&self.pool)
        .await?
        .ok_or(RegistryError::NotFound)?;
        user_from_row(&row)
    }

    /// Ends a session; `NotFound` if there was none.
    pub async fn delete_session(&self, token_hash: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(RegistryError::NotFound);
        }
        Ok(())
    }

    /// Deletes sessions that expired before `now`; returns how many.
    pub async fn purge_expired_sessions(&self, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(to_millis(now))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
