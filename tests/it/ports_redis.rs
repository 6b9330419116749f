//! The locks suite against Redis (being written).
