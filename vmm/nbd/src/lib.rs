//! The NBD protocol (placeholder; being written).
