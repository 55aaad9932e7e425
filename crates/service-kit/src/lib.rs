//! Generic plumbing shared by both services.
