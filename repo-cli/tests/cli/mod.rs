//! Test modules, grouped by what they defend.

mod backup;
mod browse;
mod check;
mod concurrency;
mod exhaustion;
mod faults;
mod forget;
mod harness;
mod help;
mod inspect;
mod keys;
mod pg;
mod prune;
mod redis;
mod repository;
mod trees;
