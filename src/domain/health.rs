//! Whether this instance can serve now, for readiness checks.

use std::time::Duration;

use super::Result;
use crate::store::{self, Pool};

#[derive(Clone)]
pub struct Health {
    pool: Pool,
}

impl Health {
    pub fn new(pool: Pool) -> Self {
        Health { pool }
    }

    /// Whether the database answers, waiting at most `wait` for a connection.
    pub fn database_answers(&self, wait: Duration) -> Result<()> {
        Ok(store::ping(&self.pool, wait)?)
    }
}
