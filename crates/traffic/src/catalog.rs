//! Static reference data the generator draws from: provinces with population weights (and
//! their 2025 merger, which `verify` reads), the pilot's localities and districts, and
//! Vietnamese name lists (NFC, with diacritics).
//!
//! Population weights are the 2019 census populations in thousands, rounded; they are only
//! used as relative weights for spreading the `national-year` profile's births.

/// A province: three-digit code in force from 2016, name, population in thousands, and
/// the code of the province it became part of on 2025-07-01.
#[derive(Debug, Clone, Copy)]
pub struct Province {
    pub code: &'static str,
    pub name: &'static str,
    pub population_thousands: u32,
    /// "0" + the merged province's administrative code (`province-merger-2025.csv`); a
    /// deployment may number registrations from 2025-07-01 with it.
    pub merged_code: &'static str,
}

const fn p(
    code: &'static str,
    name: &'static str,
    population_thousands: u32,
    merged_code: &'static str,
) -> Province {
    Province {
        code,
        name,
        population_thousands,
        merged_code,
    }
}

/// The day the 63 provinces became 34 (Resolution 202/2025/QH15).
pub fn merger_date() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2025, 7, 1).unwrap_or_default()
}

/// The 63 provinces (codes and names as in `shared/data/provinces.csv`, merged codes as in
/// `shared/data/province-merger-2025.csv`).
pub const PROVINCES: [Province; 63] = [
    p("001", "Hà Nội", 8054, "001"),
    p("002", "Hà Giang", 854, "008"),
    p("004", "Cao Bằng", 530, "004"),
    p("006", "Bắc Kạn", 314, "019"),
    p("008", "Tuyên Quang", 785, "008"),
    p("010", "Lào Cai", 731, "015"),
    p("011", "Điện Biên", 599, "011"),
    p("012", "Lai Châu", 460, "012"),
    p("014", "Sơn La", 1248, "014"),
    p("015", "Yên Bái", 822, "015"),
    p("017", "Hòa Bình", 854, "025"),
    p("019", "Thái Nguyên", 1287, "019"),
    p("020", "Lạng Sơn", 782, "020"),
    p("022", "Quảng Ninh", 1320, "022"),
    p("024", "Bắc Giang", 1804, "024"),
    p("025", "Phú Thọ", 1464, "025"),
    p("026", "Vĩnh Phúc", 1152, "025"),
    p("027", "Bắc Ninh", 1369, "024"),
    p("030", "Hải Dương", 1893, "031"),
    p("031", "Hải Phòng", 2029, "031"),
    p("033", "Hưng Yên", 1253, "033"),
    p("034", "Thái Bình", 1861, "033"),
    p("035", "Hà Nam", 852, "037"),
    p("036", "Nam Định", 1781, "037"),
    p("037", "Ninh Bình", 982, "037"),
    p("038", "Thanh Hóa", 3641, "038"),
    p("040", "Nghệ An", 3327, "040"),
    p("042", "Hà Tĩnh", 1289, "042"),
    p("044", "Quảng Bình", 896, "044"),
    p("045", "Quảng Trị", 633, "044"),
    p("046", "Thừa Thiên Huế", 1129, "046"),
    p("048", "Đà Nẵng", 1135, "048"),
    p("049", "Quảng Nam", 1496, "048"),
    p("051", "Quảng Ngãi", 1232, "051"),
    p("052", "Bình Định", 1487, "052"),
    p("054", "Phú Yên", 873, "066"),
    p("056", "Khánh Hòa", 1232, "056"),
    p("058", "Ninh Thuận", 591, "056"),
    p("060", "Bình Thuận", 1231, "068"),
    p("062", "Kon Tum", 540, "051"),
    p("064", "Gia Lai", 1514, "052"),
    p("066", "Đắk Lắk", 1869, "066"),
    p("067", "Đắk Nông", 622, "068"),
    p("068", "Lâm Đồng", 1297, "068"),
    p("070", "Bình Phước", 995, "075"),
    p("072", "Tây Ninh", 1170, "080"),
    p("074", "Bình Dương", 2426, "079"),
    p("075", "Đồng Nai", 3097, "075"),
    p("077", "Bà Rịa - Vũng Tàu", 1149, "079"),
    p("079", "Hồ Chí Minh", 8993, "079"),
    p("080", "Long An", 1689, "080"),
    p("082", "Tiền Giang", 1765, "082"),
    p("083", "Bến Tre", 1289, "086"),
    p("084", "Trà Vinh", 1010, "086"),
    p("086", "Vĩnh Long", 1023, "086"),
    p("087", "Đồng Tháp", 1600, "082"),
    p("089", "An Giang", 1908, "091"),
    p("091", "Kiên Giang", 1724, "091"),
    p("092", "Cần Thơ", 1236, "092"),
    p("093", "Hậu Giang", 734, "092"),
    p("094", "Sóc Trăng", 1200, "092"),
    p("095", "Bạc Liêu", 907, "096"),
    p("096", "Cà Mau", 1194, "096"),
];

/// The province with this code.
pub fn province(code: &str) -> Option<&'static Province> {
    PROVINCES.iter().find(|p| p.code == code)
}

/// One locality of the 2016 pilot.
#[derive(Debug, Clone, Copy)]
pub struct Locality {
    pub province_code: &'static str,
    pub name: &'static str,
    /// Share of the pilot's births, in per mille (normalised by the generator).
    pub weight_per_mille: u32,
    /// District-level units (their Justice Offices), by name.
    pub districts: &'static [&'static str],
    /// Commune-level units, spread over the districts.
    pub communes: u32,
    /// Birth facilities used for `place_of_birth`.
    pub hospitals: &'static [&'static str],
}

/// The five pilot localities: 77 district-level and 1,199 commune-level units.
pub const PILOT_LOCALITIES: [Locality; 5] = [
    Locality {
        province_code: "001",
        name: "Hà Nội",
        weight_per_mille: 430,
        districts: &[
            "quận Ba Đình",
            "quận Hoàn Kiếm",
            "quận Tây Hồ",
            "quận Long Biên",
            "quận Cầu Giấy",
            "quận Đống Đa",
            "quận Hai Bà Trưng",
            "quận Hoàng Mai",
            "quận Thanh Xuân",
            "quận Nam Từ Liêm",
            "quận Bắc Từ Liêm",
            "quận Hà Đông",
            "thị xã Sơn Tây",
            "huyện Sóc Sơn",
            "huyện Đông Anh",
            "huyện Gia Lâm",
            "huyện Thanh Trì",
            "huyện Mê Linh",
            "huyện Ba Vì",
            "huyện Phúc Thọ",
            "huyện Đan Phượng",
            "huyện Hoài Đức",
            "huyện Quốc Oai",
            "huyện Thạch Thất",
            "huyện Chương Mỹ",
            "huyện Thanh Oai",
            "huyện Thường Tín",
            "huyện Phú Xuyên",
            "huyện Ứng Hòa",
            "huyện Mỹ Đức",
        ],
        communes: 584,
        hospitals: &[
            "Bệnh viện Phụ sản Hà Nội",
            "Bệnh viện Phụ sản Trung ương",
            "Bệnh viện Bạch Mai",
            "Bệnh viện Đa khoa Hà Đông",
            "Bệnh viện Đa khoa Đông Anh",
            "Bệnh viện Thanh Nhàn",
        ],
    },
    Locality {
        province_code: "079",
        name: "Hồ Chí Minh",
        weight_per_mille: 380,
        districts: &[
            "Quận 1",
            "Quận 2",
            "Quận 3",
            "Quận 4",
            "Quận 5",
            "Quận 6",
            "Quận 7",
            "Quận 8",
            "Quận 9",
            "Quận 10",
            "Quận 11",
            "Quận 12",
            "quận Gò Vấp",
            "quận Tân Bình",
            "quận Tân Phú",
            "quận Bình Thạnh",
            "quận Phú Nhuận",
            "quận Thủ Đức",
            "quận Bình Tân",
            "huyện Củ Chi",
            "huyện Hóc Môn",
            "huyện Bình Chánh",
            "huyện Nhà Bè",
            "huyện Cần Giờ",
        ],
        communes: 322,
        hospitals: &[
            "Bệnh viện Từ Dũ",
            "Bệnh viện Hùng Vương",
            "Bệnh viện Nhân dân Gia Định",
            "Bệnh viện Quận Thủ Đức",
            "Bệnh viện Đa khoa Củ Chi",
        ],
    },
    Locality {
        province_code: "031",
        name: "Hải Phòng",
        weight_per_mille: 110,
        districts: &[
            "quận Hồng Bàng",
            "quận Ngô Quyền",
            "quận Lê Chân",
            "quận Hải An",
            "quận Kiến An",
            "quận Đồ Sơn",
            "quận Dương Kinh",
            "huyện Thủy Nguyên",
            "huyện An Dương",
            "huyện An Lão",
            "huyện Kiến Thụy",
            "huyện Tiên Lãng",
            "huyện Vĩnh Bảo",
            "huyện Cát Hải",
            "huyện Bạch Long Vĩ",
        ],
        communes: 223,
        hospitals: &[
            "Bệnh viện Phụ sản Hải Phòng",
            "Bệnh viện Hữu nghị Việt Tiệp",
            "Bệnh viện Đa khoa Thủy Nguyên",
        ],
    },
    Locality {
        province_code: "048",
        name: "Đà Nẵng",
        weight_per_mille: 70,
        districts: &[
            "quận Hải Châu",
            "quận Thanh Khê",
            "quận Sơn Trà",
            "quận Ngũ Hành Sơn",
            "quận Liên Chiểu",
            "quận Cẩm Lệ",
            "huyện Hòa Vang",
        ],
        communes: 56,
        hospitals: &[
            "Bệnh viện Phụ sản - Nhi Đà Nẵng",
            "Bệnh viện Đà Nẵng",
            "Trung tâm Y tế huyện Hòa Vang",
        ],
    },
    Locality {
        province_code: "040",
        name: "Quế Phong (Nghệ An)",
        weight_per_mille: 5,
        districts: &["huyện Quế Phong"],
        communes: 14,
        hospitals: &[
            "Bệnh viện Đa khoa huyện Quế Phong",
            "Trạm Y tế xã Tiền Phong",
        ],
    },
];

/// Words that commune and ward names are built from.
pub const PLACE_WORDS: &[&str] = &[
    "An Bình",
    "An Khánh",
    "Bình Minh",
    "Cát Linh",
    "Đông Hòa",
    "Đồng Tâm",
    "Hòa Bình",
    "Hòa Phú",
    "Hưng Thịnh",
    "Kim Liên",
    "Long Thạnh",
    "Minh Khai",
    "Nam Sơn",
    "Nghĩa Đô",
    "Phú Lãm",
    "Phú Mỹ",
    "Phúc Xá",
    "Quang Trung",
    "Tân Định",
    "Tân Lập",
    "Tân Phong",
    "Thanh Hà",
    "Thạch Bàn",
    "Thượng Đình",
    "Tiền Phong",
    "Trung Hòa",
    "Trung Tự",
    "Văn Miếu",
    "Vĩnh Phúc",
    "Xuân La",
    "Yên Hòa",
    "Yên Sở",
];

/// Family names with rough frequencies in per mille (Nguyễn ~38%).
pub const FAMILY_NAMES: &[(&str, u32)] = &[
    ("Nguyễn", 380),
    ("Trần", 110),
    ("Lê", 95),
    ("Phạm", 70),
    ("Hoàng", 30),
    ("Huỳnh", 21),
    ("Phan", 45),
    ("Vũ", 22),
    ("Võ", 17),
    ("Đặng", 21),
    ("Bùi", 20),
    ("Đỗ", 14),
    ("Hồ", 13),
    ("Ngô", 13),
    ("Dương", 10),
    ("Lý", 5),
    ("Đinh", 7),
    ("Trịnh", 5),
    ("Lương", 4),
    ("Đào", 5),
];

/// Family names common among the Thái of Quế Phong.
pub const THAI_FAMILY_NAMES: &[(&str, u32)] = &[
    ("Lữ", 30),
    ("Lô", 25),
    ("Vi", 20),
    ("Lang", 15),
    ("Sầm", 10),
    ("Kha", 10),
    ("Hà", 10),
];

pub const MALE_MIDDLE: &[&str] = &[
    "Văn", "Đức", "Minh", "Quang", "Hữu", "Gia", "Hoàng", "Thành", "Anh", "Tuấn", "Bảo", "Đăng",
];
pub const FEMALE_MIDDLE: &[&str] = &[
    "Thị", "Ngọc", "Thu", "Thanh", "Phương", "Bảo", "Khánh", "Mai", "Minh", "Hồng", "Diệu", "Thùy",
];
pub const MALE_GIVEN: &[&str] = &[
    "Anh", "Bảo", "Dũng", "Đức", "Hùng", "Huy", "Khang", "Khoa", "Long", "Minh", "Nam", "Phúc",
    "Quân", "Sơn", "Thắng", "Tuấn", "Việt", "Hiếu", "Kiên", "Lâm", "Nguyên", "Phong", "Tài", "Trí",
    "Trung", "Vinh", "Đạt", "Khôi", "Lộc", "Thịnh",
];
pub const FEMALE_GIVEN: &[&str] = &[
    "Anh", "Châu", "Chi", "Diệp", "Giang", "Hà", "Hân", "Hương", "Lan", "Linh", "Mai", "My",
    "Ngân", "Ngọc", "Nhi", "Như", "Oanh", "Phương", "Quỳnh", "Tâm", "Thảo", "Thư", "Trang", "Trâm",
    "Uyên", "Vy", "Yến", "Loan", "Hằng", "Nhung",
];

/// Foreign parents of births with a foreign element: (ISO 3166-1 alpha-2, full name).
pub const FOREIGN_PARENTS: &[(&str, &str)] = &[
    ("KR", "Kim Min-jun"),
    ("KR", "Park Ji-hoon"),
    ("KR", "Lee Seo-yeon"),
    ("JP", "Tanaka Hiroshi"),
    ("JP", "Suzuki Yuki"),
    ("CN", "Wang Wei"),
    ("CN", "Li Na"),
    ("TW", "Chen Chih-hao"),
    ("US", "John Miller"),
    ("US", "Emily Johnson"),
    ("FR", "Pierre Dubois"),
    ("AU", "Jack Wilson"),
    ("DE", "Lukas Schneider"),
    ("GB", "Oliver Smith"),
    ("RU", "Ivan Petrov"),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The population registry mints from this file; the catalog must agree with it.
    const MERGER_CSV: &str =
        include_str!("../../../services/population-registry/data/province-merger-2025.csv");

    #[test]
    fn merged_codes_are_those_of_the_population_registrys_merger_table() {
        let mut rows = 0;
        for row in csv::Reader::from_reader(MERGER_CSV.as_bytes()).records() {
            let row = row.unwrap();
            let (old, new) = (&row[0], &row[3]);
            let province = province(old).unwrap_or_else(|| panic!("{old} not in the catalog"));
            assert_eq!(province.merged_code, format!("0{new}"), "province {old}");
            rows += 1;
        }
        assert_eq!(rows, PROVINCES.len());
    }
}
