//! The `hygiene` and `inject` stages: what the upstream receives.

pub mod cors;
pub mod forwarded;
pub mod hasura;
pub mod hygiene;
pub mod template;

pub use hygiene::{canonical, clean_request, spoofed, strip_hop_by_hop, OwnedHeaders};
pub use template::{HeaderTemplate, RenderError};
