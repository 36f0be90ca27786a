//! The `decide` stage: which route a request takes and whether its claims
//! satisfy that route's rule.

pub mod path;
pub mod route;
pub mod rule;

pub use crate::claims::{ClaimPath, Found};
pub use path::{canonical_segments, PathError};
pub use route::{Matched, Route, Router, Segment, Target};
pub use rule::{Op, Rule};
