//! Word lists of the Clerk simulator (on top of the shared lists in `crate::names`), and the
//! text helpers that turn names into e-mail local parts, usernames and slugs. Changing a list
//! changes the generated data of every seed: treat the lists as append-only.

/// First names with diacritics and non-Latin letters.
pub(crate) const INTERNATIONAL_FIRST: &[&str] = &[
    "Zoë",
    "José",
    "Björk",
    "Łukasz",
    "François",
    "Søren",
    "Chloé",
    "Renée",
    "Jürgen",
    "Małgorzata",
    "Åsa",
    "Ólafur",
    "İbrahim",
    "Siobhán",
    "Ñusta",
    "Dvořák",
    "Grégoire",
    "Anaïs",
];

/// Last names with diacritics and apostrophes.
pub(crate) const INTERNATIONAL_LAST: &[&str] = &[
    "Müller",
    "García",
    "Kowalczyk",
    "Østergaard",
    "Nguyễn",
    "Guðmundsdóttir",
    "Šimek",
    "Çelik",
    "O'Brien",
    "Lefèvre",
    "Ångström",
    "Núñez",
    "Wiśniewski",
    "Dąbrowska",
];

/// Full names written in CJK scripts: `(first, last)`.
pub(crate) const CJK_NAMES: &[(&str, &str)] = &[
    ("美咲", "佐藤"),
    ("伟", "王"),
    ("지민", "김"),
    ("陽翔", "鈴木"),
    ("秀英", "李"),
    ("서연", "박"),
];

/// First halves of generated organization names.
pub(crate) const ORG_FIRST: &[&str] = &[
    "Acme",
    "Blue",
    "Northwind",
    "Bright",
    "Silver",
    "Rapid",
    "Quiet",
    "Golden",
    "Nordic",
    "Summit",
    "Crimson",
    "Lunar",
    "Evergreen",
    "Atlas",
    "Coastal",
    "Prairie",
];

/// Second halves of generated organization names.
pub(crate) const ORG_SECOND: &[&str] = &[
    "Labs",
    "Works",
    "Systems",
    "Studio",
    "Collective",
    "Partners",
    "Analytics",
    "Robotics",
    "Foods",
    "Health",
    "Logistics",
    "Media",
    "Ventures",
    "Dynamics",
    "Design",
];

/// Organization names with diacritics, punctuation and CJK.
pub(crate) const ORG_SPECIAL: &[&str] = &[
    "Café Zoë",
    "Müller & Söhne",
    "Łódź Software",
    "Škoda Fans",
    "Société des Tests",
    "東京ラボ",
    "서울 스튜디오",
    "Ñandú Records",
];

/// Values of the users' `public_metadata.plan`.
pub(crate) const PLANS: &[&str] = &["free", "pro", "team", "enterprise"];

/// Values of the organizations' `public_metadata.region`.
pub(crate) const REGIONS: &[&str] = &["us-east", "us-west", "eu-central", "ap-southeast"];

/// Values of the users' `locale` (besides `null`).
pub(crate) const LOCALES: &[&str] = &["en-US", "en-GB", "fr-FR", "de-DE", "es-ES", "ja-JP"];

/// Latin letters with diacritics mapped to ASCII; other non-ASCII characters are dropped.
fn fold_char(c: char) -> Option<char> {
    if c.is_ascii() {
        return Some(c);
    }
    let folded = match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ą' | 'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' => {
            'a'
        }
        'ç' | 'ć' | 'č' | 'Ç' | 'Ć' | 'Č' => 'c',
        'ð' | 'ď' | 'Ð' | 'Ď' => 'd',
        'è' | 'é' | 'ê' | 'ë' | 'ę' | 'ě' | 'ễ' | 'È' | 'É' | 'Ê' | 'Ë' => 'e',
        'ğ' | 'Ğ' => 'g',
        'ì' | 'í' | 'î' | 'ï' | 'ı' | 'İ' | 'Í' | 'Î' => 'i',
        'ł' | 'Ł' => 'l',
        'ñ' | 'ń' | 'Ñ' | 'Ń' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'Ò' | 'Ó' | 'Ö' | 'Ø' => 'o',
        'ř' | 'Ř' => 'r',
        'ś' | 'š' | 'ş' | 'Ś' | 'Š' | 'Ş' => 's',
        'ù' | 'ú' | 'û' | 'ü' | 'Ù' | 'Ú' | 'Ü' => 'u',
        'ý' | 'ÿ' | 'Ý' => 'y',
        'ź' | 'ż' | 'ž' | 'Ź' | 'Ż' | 'Ž' => 'z',
        _ => return None,
    };
    Some(folded)
}

/// Lowercase ASCII letters and digits of `s` (diacritics folded, everything else dropped).
pub(crate) fn ascii_word(s: &str) -> String {
    s.chars()
        .filter_map(fold_char)
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// A slug as Clerk allows it: lowercase ASCII letters, digits and single dashes (empty when
/// nothing of `name` survives folding).
pub(crate) fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().filter_map(fold_char) {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_to_ascii() {
        assert_eq!(ascii_word("Zoë"), "zoe");
        assert_eq!(ascii_word("Łukasz"), "lukasz");
        assert_eq!(ascii_word("O'Brien"), "obrien");
        assert_eq!(ascii_word("美咲"), "");
        assert_eq!(slugify("Müller & Söhne"), "muller-sohne");
        assert_eq!(slugify("Café Zoë"), "cafe-zoe");
        assert_eq!(slugify("東京ラボ"), "");
        assert_eq!(slugify("  Acme -- Labs! "), "acme-labs");
    }
}
