//! The leaf module every stage shares: verified [`Claims`], compiled claim
//! paths, where an issuer keeps its claims, and the request values rules and
//! templates read. It depends on nothing else of claimgate's, so `policy`
//! and `forward` (and `token`) can all use it.

mod locations;
mod path;
mod request;

use serde_json::{Map, Value};

pub use locations::{ClaimLocations, LocationTexts};
pub use path::{ClaimPath, Found};
pub use request::{RequestFacts, RequestValue};

/// The verified claims of a token (or an introspection answer), untrusted
/// claims already removed. Parsed once; policy and headers read this value.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    root: Value,
}

impl Claims {
    /// Claims from a JSON object (verification, `explain --claims`, tests).
    pub fn from_object(map: Map<String, Value>) -> Self {
        Self {
            root: Value::Object(map),
        }
    }

    /// The claims as one JSON object.
    pub fn root(&self) -> &Value {
        &self.root
    }
}
