//! Store suite (being written).
