//! The fleet store: the same GCRA in Redis, one atomic script per request
//! (one round trip), on Redis's own clock so that replicas with skewed
//! clocks share one limit. The connection is made on first use and remade
//! after a failure, at most once a second; every call is bounded by the
//! configured timeout. Any failure is a [`StoreError`]: the limit's
//! `on_store_error` decides (SECURITY.md rule 24), never silently unlimited.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::Script;

use super::gcra::{Rate, Verdict};

/// The GCRA step of `gcra::step`, in Lua, on Redis's clock (µs).
/// KEYS[1] bucket; ARGV[1] interval µs; ARGV[2] period µs.
/// Returns {1, remaining} or {0, retry_after_us}.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local ahead = new_tat - now
if ahead > period then
  return {0, ahead - period}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(ahead / 1000) + 1)
return {1, math.floor((period - ahead) / interval)}
";

/// Where the shared store is and how long a call may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port/db` (or `rediss://`), without the password.
    pub url: String,
    /// Read from env or a file by the config, never logged.
    pub password: Option<String>,
    pub timeout: Duration,
    /// Prefix of every key claimgate writes.
    pub prefix: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis timed out")]
    Timeout,
    #[error("redis: {0}")]
    Redis(String),
    #[error("redis unreachable (next attempt in under a second)")]
    Backoff,
}

pub struct RedisStore {
    settings: RedisSettings,
    script: Script,
    conn: Mutex<Option<ConnectionManager>>,
    /// Held by the request making the connection; others wait for it, at
    /// most the timeout.
    connecting: tokio::sync::Mutex<()>,
    last_attempt: Mutex<Option<Instant>>,
}

impl RedisStore {
    pub fn new(settings: RedisSettings) -> Self {
        Self {
            settings,
            script: Script::new(SCRIPT),
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            last_attempt: Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let current = || self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(c) = current() {
            return Ok(c);
        }
        // One attempt at a time, and one a second; the others wait for it,
        // at most the timeout.
        let _attempt = tokio::time::timeout(self.settings.timeout, self.connecting.lock())
            .await
            .map_err(|_| StoreError::Timeout)?;
        if let Some(c) = current() {
            return Ok(c);
        }
        {
            let mut last = self.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return Err(StoreError::Backoff);
            }
            *last = Some(Instant::now());
        }
        let mut info: redis::ConnectionInfo = self
            .settings
            .url
            .as_str()
            .parse()
            .map_err(|e: redis::RedisError| StoreError::Redis(e.to_string()))?;
        if let Some(p) = &self.settings.password {
            let settings = info.redis_settings().clone().set_password(p.clone());
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info).map_err(|e| StoreError::Redis(e.to_string()))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.settings.timeout))
            .set_response_timeout(Some(self.settings.timeout))
            .set_number_of_retries(0);
        let made = tokio::time::timeout(
            self.settings.timeout * 2,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| StoreError::Timeout)?
        .map_err(|e| StoreError::Redis(e.to_string()))?;
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(made.clone());
        Ok(made)
    }

    /// One request against `bucket` (already namespaced by limit and plan).
    /// A connection that broke since its last use (Redis restarted) is
    /// remade and the call tried once more, so a recovery costs no refusal.
    pub async fn check(&self, bucket: &str, rate: &Rate) -> Result<Verdict, StoreError> {
        let key = format!("{}{bucket}", self.settings.prefix);
        let mut call = self.script.key(key);
        call.arg(rate.interval_us()).arg(rate.period_us());
        let mut retried = false;
        loop {
            let mut conn = self.connection().await?;
            let answer: Result<(u8, u64), _> =
                tokio::time::timeout(self.settings.timeout, call.invoke_async(&mut conn))
                    .await
                    .map_err(|_| StoreError::Timeout)?;
            match answer {
                Ok((1, remaining)) => return Ok(Verdict::Allowed { remaining }),
                Ok((_, wait_us)) => {
                    return Ok(Verdict::Limited {
                        retry_after: Duration::from_micros(wait_us),
                    })
                }
                Err(e) => {
                    // A connection fault drops the connection: the next
                    // attempt makes a new one (at most one a second).
                    let broken = e.is_io_error() || e.is_connection_dropped() || e.is_timeout();
                    if broken {
                        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    }
                    if !broken || retried {
                        return Err(StoreError::Redis(e.to_string()));
                    }
                    retried = true;
                }
            }
        }
    }
}
