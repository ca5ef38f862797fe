//! Test modules, grouped by what they defend.

mod availability;
mod backup;
mod browse;
mod check;
mod concurrency;
mod copy;
mod dictionary;
mod exhaustion;
mod faults;
mod forget;
mod harness;
mod help;
mod hostile;
mod inspect;
mod keys;
mod pg;
mod pgserver;
mod pitr;
mod plan;
mod prune;
mod qdrant;
mod qdrant_fake;
mod redis;
mod repository;
mod requests;
mod s3;
mod s3_faults;
mod scripting;
mod trees;
<<<<<<< HEAD
mod unattended;
=======
mod wal;
>>>>>>> base
