//! Opening and creating the tool's files with their path in the error: a tester who typed
//! one wrong name should be told which.

use std::{fs::File, path::Path};

use anyhow::Context as _;

/// Opens `path` for reading.
pub fn open(path: &Path) -> anyhow::Result<File> {
    File::open(path).with_context(|| format!("cannot open {}", path.display()))
}

/// Creates (or truncates) `path` for writing.
pub fn create(path: &Path) -> anyhow::Result<File> {
    File::create(path).with_context(|| format!("cannot create {}", path.display()))
}
