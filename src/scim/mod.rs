//! SCIM 2.0 protocol (RFC 7643 / RFC 7644): the pure parts, without HTTP or storage.

pub mod error;
pub mod filter;
pub mod list;
pub mod patch;
pub mod resource;
pub mod schema;
pub mod user_name;
