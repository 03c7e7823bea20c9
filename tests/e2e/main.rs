//! End-to-end tests: each module runs the real `vmm` binary.

mod channels;
mod common;
mod control;
mod cpu;
mod cpu_models;
mod instances;
mod introspect;
mod matrix_cells;
mod migration;
mod migration_failures;
mod qmp;
mod runtime;
mod sticky;
mod storage;
mod tls;
