//! The validated manifest model.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{
    MAX_CONCURRENCY, ManifestError, Reporter, whole_number_help, whole_number_message,
};
use crate::graph::{Dependency, DependencyGraph};
use crate::spec::{
    AuthKind, DeltaSpec, DependencyKind, FieldType, Format, ManifestSpec, PaginationStyle,
    RelationshipSource, WebhookApply, WebhookScheme,
};

/// A validated adapter manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Where it came from: a path or `builtin:NAME`.
    pub file: String,
    /// Short name (`pco`).
    pub name: String,
    /// Human-readable title.
    pub title: String,
    /// Default base URL.
    pub base_url: String,
    /// Response document format.
    pub format: Format,
    /// Authentication.
    pub auth: Auth,
    /// Paging.
    pub pagination: Pagination,
    /// The request budget, if the API declares one.
    pub rate_limit: Option<RateLimit>,
    /// How the API signs the webhooks it sends (`None`: it sends none).
    pub webhook_scheme: Option<WebhookScheme>,
    /// How a webhook delivery's record is applied.
    pub webhook_apply: WebhookApply,
    /// Entities by name.
    pub entities: BTreeMap<String, Entity>,
    /// Their dependency graph.
    pub graph: DependencyGraph,
}

impl Manifest {
    /// An entity by name.
    pub fn entity(&self, name: &str) -> Option<&Entity> {
        self.entities.get(name)
    }
}

/// Authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// Credential kinds a connection may hold.
    pub kinds: Vec<AuthKind>,
    /// OAuth2 token endpoint.
    pub token_url: Option<String>,
}

/// Paging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pagination {
    /// Style.
    pub style: PaginationStyle,
    /// Page size requested.
    pub page_size: u32,
    /// The most records the API serves per request (`max_page_size`, else
    /// `page_size`): the largest page size a connection may ask for.
    pub max_page_size: u32,
    /// Page size parameter.
    pub page_size_param: String,
    /// Offset parameter.
    pub offset_param: String,
    /// Plain JSON: the field holding the records.
    pub records_field: Option<String>,
    /// Query parameter carrying an entity's `order`.
    pub order_param: String,
}

/// The request budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per period.
    pub requests: u32,
    /// Period in seconds.
    pub period_secs: u32,
    /// Header: requests used in the window.
    pub count_header: Option<String>,
    /// Header: the limit.
    pub limit_header: Option<String>,
    /// Header: the period.
    pub period_header: Option<String>,
    /// Header: seconds to wait after a 429.
    pub retry_after_header: Option<String>,
}

/// One entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    /// The entity's name (the source's type name).
    pub name: String,
    /// The canonical entity it maps to.
    pub canonical: String,
    /// Collection path (`{parent_id}` for listing under a parent).
    pub list: String,
    /// Single-record path with `{id}`.
    pub get: Option<String>,
    /// Parent entity it is listed under.
    pub parent: Option<String>,
    /// Order for full scans.
    pub order: Option<String>,
    /// Plain JSON: the field holding this entity's records (`None`: the
    /// body is the array) — the entity's own, else the pagination's.
    pub records_field: Option<String>,
    /// Attribute holding the source's last-modified time.
    pub updated_at: Option<String>,
    /// Includes: include name → entity.
    pub include: BTreeMap<String, String>,
    /// Delta strategy.
    pub delta: DeltaSpec,
    /// Webhook event names.
    pub webhooks: Vec<String>,
    /// Relationships, sorted by name.
    pub relationships: Vec<Relationship>,
    /// Field mapping, sorted by canonical field name.
    pub fields: Vec<Field>,
    /// Requests at once: parents whose children are fetched at once when
    /// listed under a parent; for a list that reports its size, the most
    /// pages fetched ahead of the commits.
    pub concurrency: usize,
}

/// One relationship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relationship {
    /// Its name.
    pub name: String,
    /// Target entity.
    pub to: String,
    /// Hard or soft.
    pub kind: DependencyKind,
    /// Where the target id comes from.
    pub source: RelationshipSource,
    /// For `source = "attribute"`.
    pub attribute: Option<String>,
}

/// One mapped field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Canonical field name.
    pub name: String,
    /// Source path segments (`$id` for the record id).
    pub from: Vec<String>,
    /// Target type.
    pub ty: FieldType,
    /// Null or missing quarantines the record.
    pub required: bool,
}

const DEFAULT_PARENT_CONCURRENCY: usize = 8;

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<&str> = candidates.map(String::as_str).collect();
    let close = list
        .iter()
        .find(|c| c.eq_ignore_ascii_case(name))
        .map(|c| format!("did you mean `{c}`? "))
        .unwrap_or_default();
    format!("{close}declared entities: {}", list.join(", "))
}

pub(crate) fn build(file: &str, text: &str, spec: ManifestSpec) -> Result<Manifest, ManifestError> {
    let mut r = Reporter::new(file, text);

    let name = spec.adapter.name.get_ref().clone();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        r.error(
            Some(spec.adapter.name.span()),
            format!("adapter name `{name}` is not a short lowercase name"),
            "use lowercase letters, digits, `-` and `_`, e.g. name = \"pco\"",
        );
    }
    let base_url = spec
        .adapter
        .base_url
        .get_ref()
        .trim_end_matches('/')
        .to_owned();
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        r.error(
            Some(spec.adapter.base_url.span()),
            format!("base_url `{base_url}` is not an http(s) URL"),
            "write the API's root, e.g. base_url = \"https://api.example.com\"",
        );
    }

    let kinds = spec.auth.kinds.get_ref().clone();
    if kinds.is_empty() {
        r.error(
            Some(spec.auth.kinds.span()),
            "auth.kinds is empty",
            "list at least one of \"bearer\", \"basic\", \"oauth2\"",
        );
    }
    if kinds.contains(&AuthKind::Oauth2) && spec.auth.token_url.is_none() {
        r.error(
            Some(spec.auth.kinds.span()),
            "oauth2 is allowed but auth.token_url is missing",
            "add token_url = \"/oauth/token\" (relative to base_url, or absolute)",
        );
    }

    let max_page_size = spec.pagination.max_page_size.as_ref();
    let max = max_page_size
        .map(|m| *m.get_ref())
        .filter(|&m| m > 0)
        .map(u64::from);
    for (key, value) in [
        ("page_size", Some(&spec.pagination.page_size)),
        ("max_page_size", max_page_size),
        ("requests", spec.rate_limit.as_ref().map(|rl| &rl.requests)),
        (
            "period_secs",
            spec.rate_limit.as_ref().map(|rl| &rl.period_secs),
        ),
    ] {
        if let Some(value) = value
            && *value.get_ref() == 0
        {
            let max = if key == "page_size" { max } else { None };
            r.error(
                Some(value.span()),
                whole_number_message(key, "0"),
                whole_number_help(max),
            );
        }
    }
    let page_size = *spec.pagination.page_size.get_ref();
    if let Some(max) = max
        && u64::from(page_size) > max
    {
        r.error(
            Some(spec.pagination.page_size.span()),
            format!("page_size {page_size} is outside 1..={max}"),
            format!("set page_size between 1 and the API's maximum ({max})"),
        );
    }
    let style = *spec.pagination.style.get_ref();
    match (spec.adapter.format, style) {
        (Format::Jsonapi, PaginationStyle::LimitOffset) => r.error(
            Some(spec.pagination.style.span()),
            "a JSON:API adapter must page with style = \"jsonapi_offset\"",
            "set [pagination] style = \"jsonapi_offset\", or format = \"json\" for plain JSON APIs",
        ),
        (Format::Json, PaginationStyle::JsonapiOffset) => r.error(
            Some(spec.pagination.style.span()),
            "a plain JSON adapter (format = \"json\") cannot page with style = \"jsonapi_offset\"",
            "use style = \"limit_offset\" for plain JSON, or set [adapter] format = \"jsonapi\"",
        ),
        _ => {}
    }

    if spec.entity.is_empty() {
        r.error(
            None,
            "the manifest declares no entities",
            "add at least one [entity.NAME] table with a `list` path",
        );
    }
    let names: BTreeSet<String> = spec.entity.keys().map(|k| k.get_ref().clone()).collect();

    let mut entities = BTreeMap::new();
    let mut dependencies = Vec::new();
    // Where each relationship was written, to point a cycle at a line.
    let mut dependency_spans = BTreeMap::new();

    for (entity_name, e) in &spec.entity {
        let ename = entity_name.get_ref().clone();
        if !is_identifier(&ename) {
            r.error(
                Some(entity_name.span()),
                format!("entity name `{ename}` is not an identifier"),
                "use the source's type name, e.g. [entity.Person]",
            );
        }
        let list = e.list.get_ref().clone();
        if !list.starts_with('/') && !list.starts_with("http") {
            r.error(
                Some(e.list.span()),
                format!("list path `{list}` must start with `/`"),
                "write the path relative to base_url, e.g. list = \"/people/v2/people\"",
            );
        }
        if let Some(get) = &e.get
            && !get.get_ref().contains("{id}")
        {
            r.error(
                Some(get.span()),
                format!("get path `{}` has no `{{id}}` placeholder", get.get_ref()),
                "put {id} where the record id goes, e.g. get = \"/people/v2/people/{id}\"",
            );
        }
        let has_placeholder = list.contains("{parent_id}");
        match &e.parent {
            Some(parent) => {
                if !names.contains(parent.get_ref()) {
                    r.error(
                        Some(parent.span()),
                        format!("parent `{}` is not a declared entity", parent.get_ref()),
                        suggest(parent.get_ref(), names.iter()),
                    );
                } else if !e.relationships.values().any(|rel| {
                    rel.to.get_ref() == parent.get_ref() && rel.kind == DependencyKind::Hard
                }) {
                    // Listing under a parent needs the parent's ids first: an
                    // implicit hard dependency unless a relationship says so.
                    dependencies.push(Dependency {
                        from: ename.clone(),
                        to: parent.get_ref().clone(),
                        rel: "parent".into(),
                        kind: DependencyKind::Hard,
                    });
                    dependency_spans.insert((ename.clone(), "parent".to_owned()), parent.span());
                }
                if !has_placeholder {
                    r.error(
                        Some(e.list.span()),
                        "an entity with a parent must list under it",
                        "put {parent_id} in the list path, e.g. \"/households/{parent_id}/household_memberships\"",
                    );
                }
            }
            None if has_placeholder => r.error(
                Some(e.list.span()),
                "the list path uses {parent_id} but the entity has no parent",
                "add parent = \"ParentEntity\" or remove {parent_id} from the path",
            ),
            None => {}
        }
        if let Some(c) = &e.concurrency {
            if *c.get_ref() == 0 {
                r.error(
                    Some(c.span()),
                    whole_number_message("concurrency", "0"),
                    whole_number_help(Some(u64::from(MAX_CONCURRENCY))),
                );
            } else if *c.get_ref() > MAX_CONCURRENCY {
                r.error(
                    Some(c.span()),
                    format!(
                        "concurrency {} is outside 1..={MAX_CONCURRENCY}",
                        c.get_ref()
                    ),
                    "use a small number such as 8",
                );
            }
        }

        let mut include = BTreeMap::new();
        for (inc, target) in &e.include {
            if !names.contains(target.get_ref()) {
                r.error(
                    Some(target.span()),
                    format!(
                        "include `{inc}` points at `{}`, which is not a declared entity",
                        target.get_ref()
                    ),
                    suggest(target.get_ref(), names.iter()),
                );
            }
            include.insert(inc.clone(), target.get_ref().clone());
        }

        let delta = match &e.delta {
            None => DeltaSpec::FullScan,
            Some(delta) => {
                match delta.get_ref() {
                    DeltaSpec::Filter { .. } if e.updated_at.is_none() => r.error(
                        Some(delta.span()),
                        "a delta filter needs the entity's updated_at attribute",
                        "add updated_at = \"updated_at\" (the attribute the filter compares)",
                    ),
                    DeltaSpec::NewestFirst { .. } if e.updated_at.is_none() => r.error(
                        Some(delta.span()),
                        "strategy \"newest_first\" needs the entity's updated_at attribute",
                        "add updated_at = \"...\" (the attribute the order sorts by) to the entity",
                    ),
                    DeltaSpec::NewestFirst { .. } if e.parent.is_some() => r.error(
                        Some(delta.span()),
                        "strategy \"newest_first\" walks a top-level list, not one under a parent",
                        "use strategy = \"parent\" or \"full_scan\" for an entity listed under a parent",
                    ),
                    DeltaSpec::Parent if e.parent.is_none() => r.error(
                        Some(delta.span()),
                        "delta strategy \"parent\" needs a parent",
                        "add parent = \"ParentEntity\", or use strategy = \"full_scan\"",
                    ),
                    DeltaSpec::ParentInclude { parent, include } => {
                        let parent_spec = spec.entity.get(parent.as_str());
                        let ok = parent_spec
                            .and_then(|p| p.include.get(include))
                            .is_some_and(|t| t.get_ref() == &ename);
                        let filtered = parent_spec.is_some_and(|p| {
                            p.updated_at.is_some()
                                && matches!(
                                    p.delta.as_ref().map(|d| d.get_ref()),
                                    Some(DeltaSpec::Filter { .. })
                                )
                        });
                        if ok && !filtered {
                            r.error(
                                Some(delta.span()),
                                format!("`{parent}` cannot be asked for its changes, so its include cannot carry `{ename}`'s"),
                                format!("give [entity.{parent}] updated_at and delta = {{ strategy = \"filter\", param = ... }}, or use strategy = \"full_scan\""),
                            );
                        }
                        if !ok {
                            r.error(
                                Some(delta.span()),
                                format!("`{parent}` has no include `{include}` that yields `{ename}`"),
                                format!("declare include = {{ {include} = \"{ename}\" }} on [entity.{parent}]"),
                            );
                        }
                    }
                    _ => {}
                }
                delta.get_ref().clone()
            }
        };

        let mut relationships = Vec::new();
        for (rel_name, rel) in &e.relationships {
            let rname = rel_name.get_ref().clone();
            let to = rel.to.get_ref().clone();
            if !names.contains(&to) {
                r.error(
                    Some(rel.to.span()),
                    format!("relationship `{rname}` of `{ename}` points at `{to}`, which is not a declared entity"),
                    suggest(&to, names.iter()),
                );
                continue;
            }
            match rel.source {
                RelationshipSource::Parent
                    if e.parent.as_ref().map(|p| p.get_ref()) != Some(&to) =>
                {
                    r.error(
                        Some(rel.to.span()),
                        format!("relationship `{rname}` takes its target from the parent, but `{ename}`'s parent is not `{to}`"),
                        format!("set parent = \"{to}\" on [entity.{ename}], or use source = \"relationship\""),
                    );
                }
                RelationshipSource::Attribute if rel.attribute.is_none() => {
                    r.error(
                        Some(rel_name.span()),
                        format!("relationship `{rname}` reads an attribute but names none"),
                        "add attribute = \"the_attribute_holding_the_id\"",
                    );
                }
                _ => {}
            }
            dependencies.push(Dependency {
                from: ename.clone(),
                to: to.clone(),
                rel: rname.clone(),
                kind: rel.kind,
            });
            dependency_spans.insert((ename.clone(), rname.clone()), rel.to.span());
            relationships.push(Relationship {
                name: rname,
                to,
                kind: rel.kind,
                source: rel.source,
                attribute: rel.attribute.clone(),
            });
        }

        let mut fields = Vec::new();
        for (field_name, field) in &e.fields {
            let fname = field_name.get_ref().clone();
            if !is_identifier(&fname) {
                r.error(
                    Some(field_name.span()),
                    format!("canonical field name `{fname}` is not an identifier"),
                    "use snake_case names such as first_name",
                );
            }
            if field.from.is_empty() || field.from.split('.').any(str::is_empty) {
                r.error(
                    Some(field_name.span()),
                    format!("field `{fname}` has an empty source path"),
                    "name the source attribute, e.g. first_name = \"first_name\" (dots for nesting)",
                );
            }
            fields.push(Field {
                name: fname,
                from: field.from.split('.').map(str::to_owned).collect(),
                ty: field.ty,
                required: field.required,
            });
        }

        entities.insert(
            ename.clone(),
            Entity {
                canonical: e.canonical.clone().unwrap_or_else(|| ename.clone()),
                name: ename,
                list,
                get: e.get.as_ref().map(|g| g.get_ref().clone()),
                parent: e.parent.as_ref().map(|p| p.get_ref().clone()),
                order: e.order.clone(),
                records_field: match &e.records_field {
                    Some(field) if field.is_empty() => None,
                    Some(field) => Some(field.clone()),
                    None => spec.pagination.records_field.clone(),
                },
                updated_at: e.updated_at.as_ref().map(|u| u.get_ref().clone()),
                include,
                delta,
                webhooks: e.webhooks.clone(),
                relationships,
                fields,
                concurrency: e
                    .concurrency
                    .as_ref()
                    .map_or(DEFAULT_PARENT_CONCURRENCY, |c| *c.get_ref() as usize),
            },
        );
    }

    let names_vec: Vec<&String> = names.iter().collect();
    let graph = match DependencyGraph::build(&names_vec, &dependencies) {
        Ok(graph) => Some(graph),
        Err(cycle) => {
            let first = &cycle.cycle[0];
            let span = dependency_spans
                .get(&(first.from.clone(), first.rel.clone()))
                .cloned();
            r.error(
                span,
                format!("hard dependencies form a cycle: {}", cycle.describe()),
                "make one relationship in the cycle kind = \"soft\" (or remove it)",
            );
            None
        }
    };

    r.finish()?;
    Ok(Manifest {
        file: file.to_owned(),
        name,
        title: spec.adapter.title.unwrap_or_default(),
        base_url,
        format: spec.adapter.format,
        auth: Auth {
            kinds,
            token_url: spec.auth.token_url,
        },
        pagination: Pagination {
            style,
            page_size,
            max_page_size: max.map_or(page_size, |m| m as u32).max(page_size),
            page_size_param: spec.pagination.page_size_param,
            offset_param: spec.pagination.offset_param,
            records_field: spec.pagination.records_field.clone(),
            order_param: spec
                .pagination
                .order_param
                .clone()
                .unwrap_or_else(|| "order".to_owned()),
        },
        rate_limit: spec.rate_limit.map(|rl| RateLimit {
            requests: *rl.requests.get_ref(),
            period_secs: *rl.period_secs.get_ref(),
            count_header: rl.count_header,
            limit_header: rl.limit_header,
            period_header: rl.period_header,
            retry_after_header: rl.retry_after_header,
        }),
        webhook_scheme: spec.webhooks.as_ref().map(|w| w.scheme),
        webhook_apply: spec.webhooks.as_ref().map(|w| w.apply).unwrap_or_default(),
        entities,
        graph: graph.expect("graph is built when there are no errors"),
    })
}
