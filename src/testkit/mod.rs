//! The test kit: signing keys generated with aws-lc-rs and published as a
//! JWKS, and loopback servers (an echo upstream that counts what reached it,
//! a JWKS / discovery endpoint whose answers can be changed). The
//! integration tests, the benchmarks and `claimgate demo` build on it; none
//! of it is on the request path. Behind the `testkit` cargo feature (on by
//! default): `--no-default-features` builds claimgate without it and
//! without the demo.

pub mod keys;
pub mod servers;
