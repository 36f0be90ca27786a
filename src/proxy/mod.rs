//! The front doors over the decision core (the reverse proxy in
//! `pipeline`, forward-auth), the listener and the upstream client.

pub mod conn;
pub mod deadlines;
pub mod ext_authz;
pub mod forward_auth;
pub mod pipeline;
pub mod reject;
pub mod server;
pub mod shards;
pub mod tls;
pub mod upgrade;
pub mod upstream;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// Every response body claimgate sends: an upstream's streamed body or one
/// of its own small ones.
pub type Body = BoxBody<Bytes, hyper::Error>;

pub use reject::Rejection;
pub use upstream::UpstreamClient;
