//! Shared Signals streams (SSF 1.0 §8): what each receiver asked for, how its events reach it
//! and whether they flow. Receivers manage their own streams through the management API.

use std::sync::Arc;

use super::mfa::Sealer;
use super::Result;
use crate::clock::Clock;
use crate::store::{self, streams::StreamRow, Pool};

/// RFC 8935: we POST each SET to the receiver.
pub const PUSH: &str = "urn:ietf:rfc:8935";
/// RFC 8936: the receiver polls us for its SETs.
pub const POLL: &str = "urn:ietf:rfc:8936";

/// A stream as the deliverers see it. `Debug` leaves the authorization header out.
#[derive(Clone)]
pub struct Stream {
    pub id: String,
    pub owner: Option<String>,
    pub audience: Vec<String>,
    pub events_requested: Vec<String>,
    pub events_delivered: Vec<String>,
    /// [`PUSH`] or [`POLL`].
    pub delivery_method: String,
    /// Push: where the SETs go.
    pub endpoint_url: Option<String>,
    /// Push: the `Authorization` header the receiver asked us to send, opened.
    pub authorization_header: Option<String>,
    /// `iss_sub`, `email` or `opaque`.
    pub subject_format: String,
    pub description: Option<String>,
    /// `enabled`, `paused` or `disabled`.
    pub status: String,
    pub status_reason: Option<String>,
    pub created_at: chrono::NaiveDateTime,
    pub updated_at: chrono::NaiveDateTime,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("delivery_method", &self.delivery_method)
            .field("endpoint_url", &self.endpoint_url)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Stream {
    /// The receiver name its messages are owed to.
    pub fn receiver(&self) -> String {
        store::streams::receiver(&self.id)
    }

    pub fn is_push(&self) -> bool {
        self.delivery_method == PUSH
    }
}

/// The sealer's context for a stream's authorization header (binds the sealed text to the stream).
fn seal_context(stream_id: &str) -> String {
    format!("ssf-stream:{stream_id}")
}

#[derive(Clone)]
pub struct Streams {
    pool: Pool,
    sealer: Arc<Sealer>,
    clock: Arc<dyn Clock>,
}

impl Streams {
    pub fn new(pool: Pool, sealer: Arc<Sealer>, clock: Arc<dyn Clock>) -> Self {
        Streams { pool, sealer, clock }
    }

    /// Every stream, oldest first.
    pub fn all(&self) -> Result<Vec<Stream>> {
        let mut conn = self.pool.get()?;
        store::streams::list(&mut conn, None)?.into_iter().map(|row| self.open(row)).collect()
    }

    fn open(&self, row: StreamRow) -> Result<Stream> {
        let list = |text: &str| -> Vec<String> { serde_json::from_str(text).unwrap_or_default() };
        let authorization_header = match &row.authorization_header {
            Some(sealed) => {
                let opened = self.sealer.open(&seal_context(&row.id), sealed).map_err(|e| {
                    super::Error::Store(store::Error::Corrupt(format!("stream {}: authorization header: {e}", row.id)))
                })?;
                Some(String::from_utf8_lossy(&opened).into_owned())
            }
            None => None,
        };
        Ok(Stream {
            audience: list(&row.audience),
            events_requested: list(&row.events_requested),
            events_delivered: list(&row.events_delivered),
            authorization_header,
            id: row.id,
            owner: row.owner,
            delivery_method: row.delivery_method,
            endpoint_url: row.endpoint_url,
            subject_format: row.subject_format,
            description: row.description,
            status: row.status,
            status_reason: row.status_reason,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}
