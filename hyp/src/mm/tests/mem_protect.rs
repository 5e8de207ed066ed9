//! Unit tests of every ownership transition: success and each failure.
