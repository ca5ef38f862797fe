//! The library half of the `cairn` binary: the few parts that other crates
//! of the workspace reuse. For now the Redis exporter's RDB stream check,
//! which the fuzz target `rdb_stream` runs (through `cairn-testkit`). The
//! command-line interface itself is the binary (`src/main.rs`); it is not
//! an API.

pub mod exporters {
    //! Exporter parts that need no process, socket or terminal.

    pub mod rdb;
}
