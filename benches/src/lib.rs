//! Benchmark-only crate: the benchmarks live in `benches/`.
