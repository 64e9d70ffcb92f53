//! The reqwest HttpSender with the destination guard.
