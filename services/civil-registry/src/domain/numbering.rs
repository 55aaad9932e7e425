//! Which province code a registration's number encodes. On 2025-07-01 the 63 provinces
//! became 34 (Resolution 202/2025/QH15); which code a birth registered since gets is not
//! settled in public sources, so it is configuration, and it must be the population
//! registry's own choice (its `minting.post_merger_rule`): a code it holds invalid on the
//! registration date is refused, and the registration would stay REJECTED.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::model::ProvinceCode;

/// The code a registering unit's births are numbered under from the merger date.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostMergerRule {
    /// The unit's own (pre-merger) province code, whatever the date.
    #[default]
    Legacy,
    /// From the merger date, the code of the merged province the unit's province became
    /// part of ("0" + its new administrative code).
    Merged,
}

/// Each pre-merger code and the code of the province it became part of.
const MERGED_INTO: &str = "001>001 002>008 004>004 006>019 008>008 010>015 011>011 012>012 014>014 015>015 017>025 019>019 020>020 022>022 024>024 025>025 026>025 027>024 030>031 031>031 033>033 034>033 035>037 036>037 037>037 038>038 040>040 042>042 044>044 045>044 046>046 048>048 049>048 051>051 052>052 054>066 056>056 058>056 060>068 062>051 064>052 066>066 067>068 068>068 070>075 072>080 074>079 075>075 077>079 079>079 080>080 082>082 083>086 084>086 086>086 087>082 089>091 091>091 092>092 093>092 094>092 095>096 096>096";

/// The day the merger took effect.
pub fn merger_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 7, 1).unwrap_or_default()
}

impl PostMergerRule {
    /// The province code the number of a birth registered on `registered_on` by a unit
    /// of `unit_province` encodes.
    pub fn number_province(
        self,
        unit_province: &ProvinceCode,
        registered_on: NaiveDate,
    ) -> ProvinceCode {
        if self == Self::Legacy || registered_on < merger_date() {
            return unit_province.clone();
        }
        MERGED_INTO
            .split(' ')
            .filter_map(|pair| pair.split_once('>'))
            .find(|(legacy, _)| *legacy == unit_province.as_str())
            .and_then(|(_, merged)| ProvinceCode::parse(merged).ok())
            // A code that is already a merged province's keeps itself.
            .unwrap_or_else(|| unit_province.clone())
    }
}

/// Every pre-merger code with the code it is numbered under from the merger date.
pub fn merged_codes() -> impl Iterator<Item = (&'static str, &'static str)> {
    MERGED_INTO
        .split(' ')
        .filter_map(|pair| pair.split_once('>'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(raw: &str) -> ProvinceCode {
        ProvinceCode::parse(raw).unwrap()
    }

    #[test]
    fn merged_numbering_starts_on_the_merger_date_and_legacy_never_changes() {
        let before = NaiveDate::from_ymd_opt(2025, 6, 30).unwrap();
        let on = merger_date();
        let ha_giang = code("002");
        assert_eq!(
            PostMergerRule::Merged.number_province(&ha_giang, before),
            ha_giang
        );
        assert_eq!(
            PostMergerRule::Merged.number_province(&ha_giang, on),
            code("008")
        );
        assert_eq!(
            PostMergerRule::Legacy.number_province(&ha_giang, on),
            ha_giang
        );
        // Binh Duong and Ba Ria-Vung Tau joined Ho Chi Minh City, which keeps its code.
        for joined in ["074", "077", "079"] {
            assert_eq!(
                PostMergerRule::Merged.number_province(&code(joined), on),
                code("079")
            );
        }
    }

    #[test]
    fn every_one_of_the_63_codes_becomes_one_of_the_34() {
        let legacy: Vec<&str> = merged_codes().map(|(l, _)| l).collect();
        let merged: std::collections::BTreeSet<&str> = merged_codes().map(|(_, m)| m).collect();
        assert_eq!(legacy.len(), 63);
        assert_eq!(merged.len(), 34);
        for raw in legacy.iter().chain(&merged) {
            assert!(ProvinceCode::parse(raw).is_ok(), "{raw}");
        }
        // A merged province's code was its own legacy code, numbered under itself.
        for m in &merged {
            assert!(merged_codes().any(|(l, n)| l == *m && n == *m), "{m}");
        }
    }
}
