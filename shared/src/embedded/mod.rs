//! Embedded (SQLite) adapters for the local server.
