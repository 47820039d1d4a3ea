//! The generated instance: a pure function of the seed and the two counts.
//!
//! * Users (`N`): created uniformly between 2024-01-01 and 2026-01-01 (UTC); names from the
//!   shared lists with about 10 % international (diacritics, apostrophes) and 2 % CJK names,
//!   2 % without a first or last name; 1–3 e-mail addresses (70 / 22 / 8 %), unique, at
//!   `example.*` domains, verified by code, link or admin (a few unverified), the primary one
//!   usually the first; a username for 60 %; `last_sign_in_at` for 85 %; 2 % banned, 1 % locked.
//! * Organizations (`M`, default `N / 10`): 1–20 distinct members (1: 15 %, 2–5: 40 %, 6–10:
//!   25 %, 11–20: 20 %), one of them the admin who created it (`created_by`); unique slugs; created after their admin, memberships after both
//!   their organization and their user.
//! * `updated_at >= created_at` everywhere, and nothing is later than 2026-01-01.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use super::ids::{GENERATED_END_MS, GENERATED_START_MS, day_floor, prefixed};
use super::model::{
    ADMIN, EmailAddress, MEMBER, Membership, Metadata, Organization, Strategy, User,
};
use super::store::State;
use super::words::{
    CJK_NAMES, INTERNATIONAL_FIRST, INTERNATIONAL_LAST, LOCALES, ORG_FIRST, ORG_SECOND,
    ORG_SPECIAL, PLANS, REGIONS, ascii_word, slugify,
};
use crate::names::{EMAIL_DOMAINS, FEMALE_FIRST, LAST, MALE_FIRST, WORK_EMAIL_DOMAINS};
use crate::rng::Rng;

// Purposes of the random streams (the `tag` of `Rng::new`).
pub(crate) const T_USER: u64 = 0xC1E4_0001;
pub(crate) const T_ORG: u64 = 0xC1E4_0002;
pub(crate) const T_INSTANCE: u64 = 0xC1E4_0003;
/// Users created by mutations, by serial.
pub(crate) const T_NEW: u64 = 0xC1E4_0004;
/// The choices of `mutate(count, seed)`, by its seed.
pub(crate) const T_MUTATE: u64 = 0xC1E4_0005;

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The instance id (`ins_…`) of a seed.
pub(crate) fn instance_id(seed: u64) -> String {
    prefixed(
        "ins",
        GENERATED_START_MS,
        &mut Rng::new(seed, T_INSTANCE, 0),
    )
}

/// The generated state of `seed` with `users` users and `orgs` organizations.
pub(crate) fn generate(seed: u64, users: usize, orgs: usize) -> State {
    let mut state = State::default();
    let mut created: Vec<(String, i64)> = Vec::with_capacity(users);
    for i in 0..users {
        let mut rng = Rng::new(seed, T_USER, i as u64);
        let created_at = rng.range(GENERATED_START_MS, GENERATED_END_MS - 86_400_000);
        let user = random_user(&state, &mut rng, created_at, GENERATED_END_MS);
        created.push((user.id.clone(), user.created_at));
        state.insert_user(user);
    }
    if created.is_empty() {
        return state;
    }
    for j in 0..orgs {
        let mut rng = Rng::new(seed, T_ORG, j as u64);
        let (admin, admin_created) = created[rng.below(created.len() as u64) as usize].clone();
        let created_at = rng.range(admin_created, GENERATED_END_MS);
        let org = random_org(&state, &mut rng, created_at, GENERATED_END_MS, Some(&admin));
        let org_id = org.id.clone();
        state.insert_org(org);
        let membership = new_membership(&mut rng, &org_id, &admin, ADMIN, created_at, created_at);
        state.insert_membership(membership);
        // Members, the admin included: mostly a handful, sometimes up to 20.
        let (lo, hi) = *rng.weighted(&[((1, 1), 15), ((2, 5), 40), ((6, 10), 25), ((11, 20), 20)]);
        let size = (rng.range(lo, hi) as usize).min(created.len());
        let others = distinct_indexes(&mut rng, created.len(), size)
            .into_iter()
            .filter(|&i| created[i].0 != admin)
            .take(size - 1);
        for other in others {
            let (user, user_created) = &created[other];
            let since = created_at.max(*user_created);
            let at = rng.range(since, GENERATED_END_MS);
            let updated = match rng.chance(150) {
                true => rng.range(at, GENERATED_END_MS),
                false => at,
            };
            let membership = new_membership(&mut rng, &org_id, user, MEMBER, at, updated);
            state.insert_membership(membership);
        }
    }
    state
}

/// `k` distinct indexes below `n` (`k <= n`), in draw order.
fn distinct_indexes(rng: &mut Rng, n: usize, k: usize) -> Vec<usize> {
    if k * 2 > n {
        // Partial Fisher–Yates.
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..k {
            let j = i + rng.below((n - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(k);
        return all;
    }
    let mut picked = Vec::with_capacity(k);
    while picked.len() < k {
        let i = rng.below(n as u64) as usize;
        if !picked.contains(&i) {
            picked.push(i);
        }
    }
    picked
}

pub(crate) fn new_membership(
    rng: &mut Rng,
    org: &str,
    user: &str,
    role: &str,
    created_at: i64,
    updated_at: i64,
) -> Membership {
    Membership {
        id: prefixed("orgmem", created_at, rng),
        organization_id: org.to_owned(),
        user_id: user.to_owned(),
        role: role.to_owned(),
        public_metadata: Metadata::new(),
        private_metadata: Metadata::new(),
        created_at,
        updated_at,
    }
}

/// A first and last name: mostly English, some international, a few CJK, a few missing.
pub(crate) fn random_name(rng: &mut Rng) -> (Option<String>, Option<String>) {
    let roll = rng.below(1000);
    let english_first = |rng: &mut Rng| match rng.chance(500) {
        true => *rng.pick(MALE_FIRST),
        false => *rng.pick(FEMALE_FIRST),
    };
    let (first, last) = match roll {
        0..20 => {
            let (first, last) = *rng.pick(CJK_NAMES);
            (Some(first), Some(last))
        }
        20..30 => (None, Some(*rng.pick(LAST))),
        30..40 => (Some(english_first(rng)), None),
        40..90 => (Some(*rng.pick(INTERNATIONAL_FIRST)), Some(*rng.pick(LAST))),
        90..130 => (
            Some(english_first(rng)),
            Some(*rng.pick(INTERNATIONAL_LAST)),
        ),
        _ => (Some(english_first(rng)), Some(*rng.pick(LAST))),
    };
    (first.map(str::to_owned), last.map(str::to_owned))
}

/// An e-mail address for this name that no user (and none of `also_taken`) has.
pub(crate) fn unique_email(
    state: &State,
    also_taken: &[String],
    rng: &mut Rng,
    first: Option<&str>,
    last: Option<&str>,
    work: bool,
) -> String {
    let (f, l) = (
        first.map(ascii_word).unwrap_or_default(),
        last.map(ascii_word).unwrap_or_default(),
    );
    let base = match (f.is_empty(), l.is_empty()) {
        (false, false) => format!("{f}.{l}"),
        (false, true) => f,
        (true, false) => l,
        (true, true) => "user".to_owned(),
    };
    let domain = match work {
        true => *rng.pick(WORK_EMAIL_DOMAINS),
        false => *rng.pick(EMAIL_DOMAINS),
    };
    let mut local = match base == "user" || rng.chance(300) {
        true => format!("{base}{}", rng.range(1, 9999)),
        false => base.clone(),
    };
    loop {
        let address = format!("{local}@{domain}");
        if !state.email_taken(&address, None) && !also_taken.contains(&address) {
            return address;
        }
        local = format!("{base}{}", rng.range(1, 99_999));
    }
}

/// A username for this name that no user has.
pub(crate) fn unique_username(
    state: &State,
    rng: &mut Rng,
    first: Option<&str>,
    last: Option<&str>,
) -> String {
    let f = first.map(ascii_word).unwrap_or_default();
    let l = last.map(ascii_word).unwrap_or_default();
    let base = match (f.is_empty(), l.is_empty()) {
        (true, true) => "user".to_owned(),
        _ if rng.chance(500) => format!("{f}{l}"),
        _ => format!("{f}_{l}").trim_matches('_').to_owned(),
    };
    let mut candidate = base.clone();
    while candidate.len() < 4 || state.username_taken(&candidate, None) {
        candidate = format!("{base}{}", rng.range(1, 99_999));
    }
    candidate
}

/// An image URL on Clerk's image proxy: an uploaded image, or the default avatar.
pub(crate) fn image_url(rng: &mut Rng, has_image: bool, owner: &str) -> String {
    let doc = match has_image {
        true => json!({"type": "proxy",
            "src": format!("https://images.clerk.dev/uploaded/img_{}", rng.token(ALPHANUMERIC, 27))}),
        false => json!({"type": "default", "rid": owner}),
    };
    format!(
        "https://img.clerk.com/{}",
        URL_SAFE_NO_PAD.encode(doc.to_string())
    )
}

/// A new e-mail address created at `created_at`.
pub(crate) fn email_address(
    rng: &mut Rng,
    address: String,
    created_at: i64,
    verified_per_mille: u64,
) -> EmailAddress {
    let strategy = *rng.weighted(&[
        (Strategy::EmailCode, 75),
        (Strategy::EmailLink, 10),
        (Strategy::Admin, 15),
    ]);
    let verified = strategy == Strategy::Admin || rng.chance(verified_per_mille);
    let (attempts, expire_at) = match strategy {
        Strategy::Admin => (None, None),
        _ => (Some(i64::from(verified)), Some(created_at + 600_000)),
    };
    EmailAddress {
        id: prefixed("idn", created_at, rng),
        email_address: address,
        verified,
        strategy,
        attempts,
        expire_at,
        created_at,
        updated_at: created_at,
    }
}

/// A random user created at `created_at`, unique against `state` (not inserted); its other
/// timestamps lie before `end`.
pub(crate) fn random_user(state: &State, rng: &mut Rng, created_at: i64, end: i64) -> User {
    let (first, last) = random_name(rng);
    let id = prefixed("user", created_at, rng);
    let updated_at = match rng.chance(400) {
        true => rng.range(created_at, end),
        false => created_at,
    };
    let count = *rng.weighted(&[(1usize, 70), (2, 22), (3, 8)]);
    let mut addresses: Vec<String> = Vec::new();
    let mut emails = Vec::new();
    for k in 0..count {
        let address = unique_email(
            state,
            &addresses,
            rng,
            first.as_deref(),
            last.as_deref(),
            k > 0,
        );
        addresses.push(address.clone());
        let at = match k {
            0 => created_at,
            _ => rng.range(created_at, updated_at),
        };
        let verified = if k == 0 { 970 } else { 700 };
        emails.push(email_address(rng, address, at, verified));
    }
    let primary = match rng.chance(850) {
        true => 0,
        false => rng.below(emails.len() as u64) as usize,
    };
    let username = rng
        .chance(600)
        .then(|| unique_username(state, rng, first.as_deref(), last.as_deref()));
    let has_image = rng.chance(400);
    let last_sign_in_at = rng.chance(850).then(|| rng.range(created_at, end));
    let last_active_at = last_sign_in_at.map(|at| day_floor(rng.range(at, end)));
    let password_enabled = rng.chance(750);
    let two_factor_enabled = rng.chance(80);
    let mut public_metadata = Metadata::new();
    if rng.chance(800) {
        public_metadata.insert("plan".into(), json!(rng.pick(PLANS)));
        public_metadata.insert("onboarded".into(), json!(rng.chance(700)));
    }
    let mut private_metadata = Metadata::new();
    if rng.chance(500) {
        private_metadata.insert(
            "stripe_customer_id".into(),
            json!(format!("cus_{}", rng.token(ALPHANUMERIC, 14))),
        );
    }
    let mut unsafe_metadata = Metadata::new();
    if rng.chance(200) {
        unsafe_metadata.insert("theme".into(), json!(rng.pick(&["dark", "light"])));
    }
    User {
        external_id: rng
            .chance(100)
            .then(|| format!("ext_{}", rng.range(100_000, 999_999))),
        primary_email_address_id: emails.get(primary).map(|e| e.id.clone()),
        username,
        locale: rng.chance(500).then(|| (*rng.pick(LOCALES)).to_owned()),
        image_url: image_url(rng, has_image, &id),
        has_image,
        public_metadata,
        private_metadata,
        unsafe_metadata,
        email_addresses: emails,
        password_enabled,
        two_factor_enabled,
        mfa_enabled_at: two_factor_enabled.then(|| rng.range(created_at, updated_at)),
        password_last_updated_at: password_enabled.then(|| rng.range(created_at, updated_at)),
        last_sign_in_at,
        last_active_at,
        banned: rng.chance(20),
        locked: rng.chance(10),
        legal_accepted_at: rng.chance(300).then_some(created_at),
        first_name: first,
        last_name: last,
        id,
        created_at,
        updated_at,
    }
}

/// An organization name: mostly "Adjective Noun", some with diacritics or in CJK.
pub(crate) fn random_org_name(rng: &mut Rng) -> String {
    match rng.chance(120) {
        true => (*rng.pick(ORG_SPECIAL)).to_owned(),
        false => format!("{} {}", rng.pick(ORG_FIRST), rng.pick(ORG_SECOND)),
    }
}

/// A slug for `name` that no organization has (`acme-labs`, `acme-labs-2`, …; `org` when
/// nothing of the name is ASCII).
pub(crate) fn unique_slug(state: &State, name: &str) -> String {
    let mut base = slugify(name);
    if base.is_empty() {
        base = "org".to_owned();
    }
    let mut candidate = base.clone();
    let mut k = 2;
    while state.slugs.contains_key(&candidate) {
        candidate = format!("{base}-{k}");
        k += 1;
    }
    candidate
}

/// A random organization created at `created_at` by `created_by` (not inserted).
pub(crate) fn random_org(
    state: &State,
    rng: &mut Rng,
    created_at: i64,
    end: i64,
    created_by: Option<&str>,
) -> Organization {
    let name = random_org_name(rng);
    let slug = unique_slug(state, &name);
    let id = prefixed("org", created_at, rng);
    let has_image = rng.chance(300);
    let mut public_metadata = Metadata::new();
    if rng.chance(700) {
        public_metadata.insert("region".into(), json!(rng.pick(REGIONS)));
        public_metadata.insert("tier".into(), json!(rng.pick(PLANS)));
    }
    let mut private_metadata = Metadata::new();
    if rng.chance(300) {
        private_metadata.insert(
            "billing_id".into(),
            json!(format!("acct_{}", rng.token(ALPHANUMERIC, 12))),
        );
    }
    Organization {
        image_url: image_url(rng, has_image, &id),
        has_image,
        max_allowed_memberships: *rng.weighted(&[(0, 6), (50, 2), (100, 1)]),
        admin_delete_enabled: rng.chance(900),
        public_metadata,
        private_metadata,
        created_by: created_by.map(str::to_owned),
        pending_invitations_count: *rng.weighted(&[(0, 7), (1, 2), (2, 1)]),
        updated_at: match rng.chance(500) {
            true => rng.range(created_at, end),
            false => created_at,
        },
        created_at,
        id,
        name,
        slug,
    }
}
