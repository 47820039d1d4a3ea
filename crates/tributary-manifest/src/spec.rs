//! The manifest file as written: serde types with spans, so that every
//! error can name the line it is about. [`crate::Manifest`] is the validated
//! model built from it.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A whole manifest file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSpec {
    /// Who the adapter talks to.
    pub adapter: AdapterSpec,
    /// How requests authenticate.
    pub auth: AuthSpec,
    /// How collections are paged.
    pub pagination: PaginationSpec,
    /// The API's request budget, if it has one.
    #[serde(default)]
    pub rate_limit: Option<RateLimitSpec>,
    /// How the API signs the webhooks it sends, if it sends any.
    #[serde(default)]
    pub webhooks: Option<WebhooksSpec>,
    /// The entities, by name (the source's type name, e.g. `Person`).
    #[serde(default)]
    pub entity: BTreeMap<Spanned<String>, EntitySpec>,
}

/// `[webhooks]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksSpec {
    /// The signature scheme of the deliveries.
    pub scheme: WebhookScheme,
    /// How a delivery's record is applied (default `fetch`).
    #[serde(default)]
    pub apply: WebhookApply,
}

/// How a webhook delivery's record is applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookApply {
    /// The delivery only says which record changed: it is read again from
    /// the API (fetch-on-notify; PCO).
    #[default]
    Fetch,
    /// The delivery carries the whole object: it is applied as sent, the
    /// newest by its `updated_at` winning (Clerk).
    Payload,
}

/// How webhook deliveries are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookScheme {
    /// Planning Center: `X-PCO-Webhooks-Authenticity`, the hex HMAC-SHA256
    /// of the raw body keyed with the subscription's secret.
    Pco,
    /// Standard Webhooks / Svix (Clerk): `webhook-*` or `svix-*` headers,
    /// `whsec_` secrets.
    StandardWebhooks,
}

/// `[adapter]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterSpec {
    /// Short lowercase name used on the command line (`pco`).
    pub name: Spanned<String>,
    /// Human-readable title.
    #[serde(default)]
    pub title: Option<String>,
    /// Default base URL; a connection can override it.
    pub base_url: Spanned<String>,
    /// Response document format.
    #[serde(default)]
    pub format: Format,
}

/// The response document format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// JSON:API: `data`, `included`, `links`, `meta`; objects have `type`,
    /// `id`, `attributes` and `relationships`.
    #[default]
    Jsonapi,
    /// Plain JSON objects with an `id` field.
    Json,
}

/// `[auth]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSpec {
    /// The kinds of credential a connection may hold.
    pub kinds: Spanned<Vec<AuthKind>>,
    /// OAuth2 token endpoint, relative to the base URL or absolute.
    #[serde(default)]
    pub token_url: Option<String>,
}

/// A kind of credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// HTTP Basic with a user and password (PCO: application id and secret).
    Basic,
    /// OAuth2 access token with a rotating refresh token.
    Oauth2,
}

/// `[pagination]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaginationSpec {
    /// The paging style.
    pub style: Spanned<PaginationStyle>,
    /// Page size requested.
    pub page_size: Spanned<u32>,
    /// Largest page size the API allows.
    #[serde(default)]
    pub max_page_size: Option<Spanned<u32>>,
    /// Query parameter carrying the page size.
    pub page_size_param: String,
    /// Query parameter carrying the offset.
    pub offset_param: String,
    /// For plain JSON lists: the field holding the array (absent: the body is
    /// the array).
    #[serde(default)]
    pub records_field: Option<String>,
    /// Query parameter carrying an entity's `order` (default `order`).
    #[serde(default)]
    pub order_param: Option<String>,
}

/// The paging styles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaginationStyle {
    /// JSON:API with `links.next` and `meta.total_count`.
    JsonapiOffset,
    /// `limit` and `offset`; the last page is shorter than the page size.
    LimitOffset,
}

/// `[rate_limit]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Requests allowed per period.
    pub requests: Spanned<u32>,
    /// The period, in seconds.
    pub period_secs: Spanned<u32>,
    /// Header reporting requests used in the current window.
    #[serde(default)]
    pub count_header: Option<String>,
    /// Header reporting the limit.
    #[serde(default)]
    pub limit_header: Option<String>,
    /// Header reporting the period.
    #[serde(default)]
    pub period_header: Option<String>,
    /// Header with the seconds to wait after a 429.
    #[serde(default)]
    pub retry_after_header: Option<String>,
}

/// `[entity.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitySpec {
    /// The canonical entity the mapping produces (defaults to the name).
    #[serde(default)]
    pub canonical: Option<String>,
    /// Collection path; `{parent_id}` stands for the parent's id when the
    /// entity is listed under a parent.
    pub list: Spanned<String>,
    /// Single-record path with `{id}`.
    #[serde(default)]
    pub get: Option<Spanned<String>>,
    /// For entities listed only under a parent: the parent entity.
    #[serde(default)]
    pub parent: Option<Spanned<String>>,
    /// `order` value for full scans (a stable order such as `created_at`).
    #[serde(default)]
    pub order: Option<String>,
    /// For plain JSON lists: the field holding this entity's array,
    /// instead of `[pagination] records_field` (`""`: the body is the
    /// array).
    #[serde(default)]
    pub records_field: Option<String>,
    /// Attribute holding the source's last-modified time.
    #[serde(default)]
    pub updated_at: Option<Spanned<String>>,
    /// Side-loadable children: include name → entity.
    #[serde(default)]
    pub include: BTreeMap<String, Spanned<String>>,
    /// How a delta sync finds changed records.
    #[serde(default)]
    pub delta: Option<Spanned<DeltaSpec>>,
    /// Webhook event names that touch this entity.
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// Relationships to other entities, by name.
    #[serde(default)]
    pub relationships: BTreeMap<Spanned<String>, RelationshipSpec>,
    /// Canonical field → source field.
    #[serde(default)]
    pub fields: BTreeMap<Spanned<String>, FieldSpec>,
    /// For entities listed under a parent: parents fetched at once.
    #[serde(default)]
    pub concurrency: Option<Spanned<u32>>,
}

/// How a delta sync finds changed records.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum DeltaSpec {
    /// A query parameter filtering on `updated_at`, e.g.
    /// `where[updated_at][gte]` (inclusive bound).
    Filter {
        /// The query parameter.
        param: String,
    },
    /// Re-read the children of parents that changed.
    Parent,
    /// Read through a parent's include of changed parents.
    ParentInclude {
        /// The parent entity.
        parent: String,
        /// The parent's include name that carries this entity.
        include: String,
    },
    /// Walk the list newest first (`order`, e.g. `-updated_at`, for an API
    /// that can sort by change time but not filter on it) and stop at the
    /// first record older than the mark, less the overlap.
    NewestFirst {
        /// The order parameter's value that lists the newest change first.
        order: String,
    },
    /// Scan everything and compare content hashes.
    FullScan,
}

/// `[entity.NAME.relationships] rel = { ... }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelationshipSpec {
    /// The target entity.
    pub to: Spanned<String>,
    /// Hard (must sync first; the record belongs to the target) or soft
    /// (preferred order, never blocking).
    pub kind: DependencyKind,
    /// Where the target id comes from.
    #[serde(default)]
    pub source: RelationshipSource,
    /// For `source = "attribute"`: the attribute holding the id.
    #[serde(default)]
    pub attribute: Option<String>,
}

/// Hard or soft.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DependencyKind {
    /// The target must be synced first.
    Hard,
    /// The target is preferably synced first.
    Soft,
}

/// Where a relationship's target id comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelationshipSource {
    /// JSON:API `relationships.<name>.data` (an identifier, a list, or null).
    #[default]
    Relationship,
    /// The parent the record was listed under.
    Parent,
    /// An attribute holding the target's id.
    Attribute,
}

/// One mapped field: `name = "source_attr"` or
/// `name = { from = "source_attr", type = "date", required = true }`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSpec {
    /// Source attribute path (dots for nesting); `$id` is the record's id.
    pub from: String,
    /// Type the value is coerced to.
    pub ty: FieldType,
    /// A missing or null value quarantines the record.
    pub required: bool,
}

/// Canonical field types and their coercions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Text; numbers and booleans are written as text.
    #[default]
    String,
    /// Whole number; numeric strings are accepted.
    Integer,
    /// Decimal number; numeric strings are accepted.
    Float,
    /// `true`/`false`; the strings "true"/"false" are accepted.
    Boolean,
    /// Calendar date `YYYY-MM-DD`.
    Date,
    /// Instant, normalised to UTC RFC 3339.
    Datetime,
    /// Any JSON value, kept as it is.
    Json,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldTable {
    from: String,
    #[serde(default, rename = "type")]
    ty: FieldType,
    #[serde(default)]
    required: bool,
}

impl<'de> Deserialize<'de> for FieldSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl<'de> serde::de::Visitor<'de> for FieldVisitor {
            type Value = FieldSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a source attribute name like \"first_name\" or a table like \
                     { from = \"birthdate\", type = \"date\" }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FieldSpec, E> {
                Ok(FieldSpec {
                    from: v.to_owned(),
                    ty: FieldType::String,
                    required: false,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<FieldSpec, A::Error> {
                let table =
                    FieldTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(FieldSpec {
                    from: table.from,
                    ty: table.ty,
                    required: table.required,
                })
            }
        }
        deserializer.deserialize_any(FieldVisitor)
    }
}
