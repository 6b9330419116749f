//! Port suites (being written).
