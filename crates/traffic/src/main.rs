//! `traffic`: generate, replay and verify registration traffic, and run the pilot.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use traffic::generate::{Outputs, generate_files};
use traffic::profile::ProfileName;

#[derive(Debug, Parser)]
#[command(name = "traffic", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes a profile's registrations (NDJSON), units CSV and officials CSV.
    Generate {
        #[arg(long, value_enum, default_value = "pilot-2016")]
        profile: ProfileName,
        #[arg(long, default_value_t = 2016)]
        seed: u64,
        /// Multiplies the registration counts (units and accounts stay as published).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// The traffic file (NDJSON).
        #[arg(long)]
        out: PathBuf,
        /// Units CSV; default next to --out as STEM.units.csv.
        #[arg(long)]
        units_out: Option<PathBuf>,
        /// Officials CSV; default next to --out as STEM.officials.csv.
        #[arg(long)]
        officials_out: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Generate {
            profile,
            seed,
            scale,
            out,
            units_out,
            officials_out,
        } => {
            let mut outputs = Outputs::next_to(&out);
            if let Some(u) = units_out {
                outputs.units = u;
            }
            if let Some(o) = officials_out {
                outputs.officials = o;
            }
            let (plan, summary) = generate_files(profile, seed, scale, &outputs)?;
            println!(
                "wrote {} registrations to {}, {} units to {}, {} officials to {}",
                summary.registrations,
                outputs.traffic.display(),
                plan.units.len(),
                outputs.units.display(),
                plan.officials.len(),
                outputs.officials.display()
            );
            println!(
                "assumed split of the {} not eligible: {} re-registrations, {} foreign nationality",
                summary.re_registrations + summary.foreign_nationality,
                summary.re_registrations,
                summary.foreign_nationality
            );
            println!("SUMMARY {}", serde_json::to_string(&summary)?);
            Ok(())
        }
    }
}
