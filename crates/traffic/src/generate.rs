//! `traffic generate`: writes a profile's registrations (NDJSON), units CSV and officials CSV.

use crate::profile::{Plan, ProfileName, Summary};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

/// Where `generate` writes its three files.
#[derive(Debug, Clone)]
pub struct Outputs {
    pub traffic: PathBuf,
    pub units: PathBuf,
    pub officials: PathBuf,
}

impl Outputs {
    /// `FILE`, and next to it `FILE-stem.units.csv` and `FILE-stem.officials.csv`.
    pub fn next_to(traffic: &Path) -> Self {
        let stem = traffic
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "traffic".to_owned());
        let dir = traffic.parent().unwrap_or(Path::new(""));
        Self {
            traffic: traffic.to_owned(),
            units: dir.join(format!("{stem}.units.csv")),
            officials: dir.join(format!("{stem}.officials.csv")),
        }
    }
}

/// Generates a profile into files; returns the plan (units, officials) and what was written.
pub fn generate_files(
    profile: ProfileName,
    seed: u64,
    scale: f64,
    out: &Outputs,
) -> anyhow::Result<(Plan, Summary)> {
    let plan = Plan::new(profile, seed, scale)?;
    plan.write_units_csv(BufWriter::new(crate::files::create(&out.units)?))?;
    plan.write_officials_csv(BufWriter::new(crate::files::create(&out.officials)?))?;
    let mut w = BufWriter::with_capacity(1 << 20, crate::files::create(&out.traffic)?);
    let summary = plan.generate(|line| {
        serde_json::to_writer(&mut w, &line)?;
        w.write_all(b"\n")?;
        Ok(())
    })?;
    w.flush()?;
    Ok((plan, summary))
}
