//! The officially assigned ISO 3166-1 alpha-2 codes. Both registries check nationalities
//! against this one list: a code the civil registry accepted and the population registry
//! refused would surface only later, as a REJECTED registration.
//!
//! The services share no domain code; this is not either ministry's rule but a public
//! standard's table that the contract names ("nationality, ISO 3166-1 alpha-2"), shared
//! as they share the Unicode tables of `unicode-normalization`.

/// Officially assigned ISO 3166-1 alpha-2 codes, sorted, one space apart.
const ISO_3166_ALPHA2: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// Whether `code` is an officially assigned alpha-2 code, in upper case.
pub fn is_assigned_alpha2(code: &str) -> bool {
    // Binary search over the fixed 3-byte stride of the list.
    let (code, list) = (code.as_bytes(), ISO_3166_ALPHA2.as_bytes());
    if code.len() != 2 {
        return false;
    }
    let (mut lo, mut hi) = (0, list.len().div_ceil(3));
    while lo < hi {
        let mid = (lo + hi) / 2;
        match list[mid * 3..mid * 3 + 2].cmp(code) {
            std::cmp::Ordering::Equal => return true,
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
        }
    }
    false
}

/// Every officially assigned code, in order.
pub fn assigned_alpha2() -> impl Iterator<Item = &'static str> {
    ISO_3166_ALPHA2.split(' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_two_letter_codes_so_the_search_can_find_each() {
        let codes: Vec<&str> = assigned_alpha2().collect();
        assert_eq!(codes.len(), 249);
        assert!(codes.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
        for code in codes {
            assert!(code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()));
            assert!(is_assigned_alpha2(code), "{code}");
        }
    }

    #[test]
    fn unassigned_reserved_and_malformed_codes_are_refused() {
        for bad in [
            "", "A", "vn", "Vn", "VNM", "AA", "ZZ", "AB", "UK", "XK", "EU", "  ", "VN ",
        ] {
            assert!(!is_assigned_alpha2(bad), "{bad:?}");
        }
    }
}
