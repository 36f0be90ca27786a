//! The token stages: `extract` finds the one token of a request, `verify`
//! turns it into trusted [`Claims`] or a [`TokenError`]; `introspect` asks
//! the issuer about opaque tokens.

pub mod cache;
pub mod error;
pub mod extract;
pub mod introspect;
pub mod issuer;
pub mod json;
pub mod profile;
pub mod verify;

pub use cache::{TokenCache, TokenKey};
pub use error::TokenError;
pub use extract::ExtractError;
pub use issuer::{Issuer, Issuers};
pub use profile::Profile;
pub use verify::{verify, Claims, Refused, Verified};
