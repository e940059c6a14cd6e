//! Telling the systems that trust this daemon what changed: security event tokens for Shared
//! Signals receivers (SSF 1.0 with CAEP and RISC events), signed with keys published at
//! `jwks_uri`.

pub mod deliver;
pub mod keys;
pub mod route;
pub mod set;
pub mod webhook;
