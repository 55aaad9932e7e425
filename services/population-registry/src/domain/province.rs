//! Province codes as data: the 63 codes in force from 2016 and the 2025
//! merger into 34 provinces, each code with its validity period, and the
//! configurable rule for which codes registrations after the merger use.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::personal_id::ProvinceCode;

const PROVINCES_CSV: &str = include_str!("../../data/provinces.csv");
const MERGER_CSV: &str = include_str!("../../data/province-merger-2025.csv");

/// The day the 63 provinces became 34 (Resolution 202/2025/QH15).
pub fn merger_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 7, 1).unwrap_or_default()
}

/// Which codes a birth registered on or after the merger date is encoded with.
/// Public sources do not settle it, so it is configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostMergerRule {
    /// The 63 legacy codes stay valid: a registering unit keeps the code of
    /// its pre-merger province.
    #[default]
    Legacy,
    /// From the merger date only the 34 merged provinces' codes
    /// ("0" + the new administrative code) are valid.
    Merged,
}

/// One code with the period in which registrations may use it.
#[derive(Clone, Debug)]
struct Entry {
    code: ProvinceCode,
    name: String,
    valid_from: Option<NaiveDate>,
    valid_until: Option<NaiveDate>,
}

/// The code table in force under one post-merger rule.
#[derive(Clone, Debug)]
pub struct ProvinceTable {
    entries: std::sync::Arc<[Entry]>,
    /// False in [`ProvinceTable::without_periods`]'s view.
    periods_apply: bool,
}

/// Why a province code cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProvinceError {
    /// Not three digits.
    #[error("must be exactly 3 digits")]
    Format,
    /// No province has this code.
    #[error("unknown province code")]
    Unknown,
    /// The code exists but is not valid on that date.
    #[error("province code not valid on {0}")]
    NotValidOn(NaiveDate),
}

impl ProvinceTable {
    /// Loads the embedded CSV files under `rule`.
    pub fn load(rule: PostMergerRule) -> anyhow::Result<Self> {
        let merger = merger_date();
        let mut entries = Vec::new();
        let mut reader = csv::Reader::from_reader(PROVINCES_CSV.as_bytes());
        for row in reader.records() {
            let row = row?;
            let code = ProvinceCode::parse(&row[0]).map_err(anyhow::Error::msg)?;
            entries.push(Entry {
                code,
                name: row[1].to_owned(),
                valid_from: None,
                valid_until: match rule {
                    PostMergerRule::Legacy => None,
                    PostMergerRule::Merged => merger.pred_opt(),
                },
            });
        }
        if rule == PostMergerRule::Merged {
            let mut reader = csv::Reader::from_reader(MERGER_CSV.as_bytes());
            let mut seen = std::collections::BTreeSet::new();
            for row in reader.records() {
                let row = row?;
                let code =
                    ProvinceCode::parse(&format!("0{}", &row[3])).map_err(anyhow::Error::msg)?;
                if seen.insert(code) {
                    let name = row[2]
                        .split(" (")
                        .next()
                        .unwrap_or(&row[2])
                        .trim()
                        .to_owned();
                    entries.push(Entry {
                        code,
                        name,
                        valid_from: Some(merger),
                        valid_until: None,
                    });
                }
            }
        }
        anyhow::ensure!(!entries.is_empty(), "empty province table");
        Ok(Self {
            entries: entries.into(),
            periods_apply: true,
        })
    }

    /// The same codes, each valid on every date: what a request stored under an earlier
    /// rule is read with to find its key (the rule may change, an issued key's answer
    /// does not).
    pub fn without_periods(&self) -> Self {
        Self {
            entries: std::sync::Arc::clone(&self.entries),
            periods_apply: false,
        }
    }

    /// Checks that `raw` is a code registrations may use on `on`.
    pub fn valid_on(&self, raw: &str, on: NaiveDate) -> Result<ProvinceCode, ProvinceError> {
        let code = ProvinceCode::parse(raw).map_err(|_| ProvinceError::Format)?;
        let mut known = false;
        for e in self.entries.iter().filter(|e| e.code == code) {
            known = true;
            let after_start = !self.periods_apply || e.valid_from.is_none_or(|from| on >= from);
            let before_end = !self.periods_apply || e.valid_until.is_none_or(|until| on <= until);
            if after_start && before_end {
                return Ok(code);
            }
        }
        if known {
            Err(ProvinceError::NotValidOn(on))
        } else {
            Err(ProvinceError::Unknown)
        }
    }

    /// Checks that `raw` is a code of the table, whatever the period.
    pub fn known(&self, raw: &str) -> Result<ProvinceCode, ProvinceError> {
        let code = ProvinceCode::parse(raw).map_err(|_| ProvinceError::Format)?;
        if self.name(code).is_some() {
            Ok(code)
        } else {
            Err(ProvinceError::Unknown)
        }
    }

    /// The name of a code; the pre-merger name when a code changed meaning,
    /// since every number issued before the merger carries that meaning.
    pub fn name(&self, code: ProvinceCode) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.code == code)
            .map(|e| e.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn the_table_holds_the_63_codes_in_force_from_2016() {
        let table = ProvinceTable::load(PostMergerRule::Legacy).unwrap();
        assert_eq!(table.entries.len(), 63);
        assert_eq!(
            table.name(ProvinceCode::parse("001").unwrap()),
            Some("Hà Nội")
        );
        assert_eq!(
            table.name(ProvinceCode::parse("079").unwrap()),
            Some("Hồ Chí Minh")
        );
    }

    #[test]
    fn legacy_codes_stay_valid_after_the_merger_by_default() {
        let table = ProvinceTable::load(PostMergerRule::default()).unwrap();
        assert!(table.valid_on("002", date(2026, 1, 5)).is_ok());
        assert_eq!(
            table.valid_on("003", date(2020, 1, 5)),
            Err(ProvinceError::Unknown)
        );
        assert_eq!(
            table.valid_on("01", date(2020, 1, 5)),
            Err(ProvinceError::Format)
        );
    }

    #[test]
    fn the_merged_rule_retires_absorbed_codes_on_the_merger_date() {
        let table = ProvinceTable::load(PostMergerRule::Merged).unwrap();
        assert!(table.valid_on("002", date(2025, 6, 30)).is_ok());
        assert_eq!(
            table.valid_on("002", date(2025, 7, 1)),
            Err(ProvinceError::NotValidOn(date(2025, 7, 1)))
        );
        // Tuyên Quang absorbed Hà Giang and keeps its own code.
        assert!(table.valid_on("008", date(2025, 7, 1)).is_ok());
        assert!(table.valid_on("001", date(2030, 1, 1)).is_ok());
    }
}
