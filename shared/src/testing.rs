//! The port contract suite, run against every adapter.
