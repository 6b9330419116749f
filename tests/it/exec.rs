//! Exec driver tests (being written).
