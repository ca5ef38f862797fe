//! repo-core integration tests: one binary, one module per thing defended.

mod suite;
