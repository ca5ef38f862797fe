//! Test modules, grouped by what they defend.

mod backup;
mod browse;
mod harness;
mod help;
mod repository;
