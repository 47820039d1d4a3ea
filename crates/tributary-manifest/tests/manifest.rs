//! Manifest parsing: the built-in manifest, and bad input with every error
//! message checked (file, line, message, fix).

use tributary_manifest::{Delta, DependencyKind, Diagnostic, FieldType, parse};

const GOOD: &str = r#"
[adapter]
name = "demo"
base_url = "https://api.example.com"

[auth]
kinds = ["bearer"]

[pagination]
style = "jsonapi_offset"
page_size = 100
max_page_size = 100
page_size_param = "per_page"
offset_param = "offset"

[entity.Person]
list = "/people"
updated_at = "updated_at"
delta = { strategy = "filter", param = "where[updated_at][gte]" }

[entity.Person.fields]
first_name = "first_name"
birthdate = { from = "birthdate", type = "date" }

[entity.Email]
list = "/emails"

[entity.Email.relationships]
person = { to = "Person", kind = "hard" }
"#;

/// Parses `text` expecting failure; returns the single diagnostic.
fn one_error(text: &str) -> Diagnostic {
    let err = parse("test.toml", text).expect_err("the manifest should be rejected");
    assert_eq!(err.diagnostics.len(), 1, "{err}");
    err.diagnostics.into_iter().next().unwrap()
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("`{needle}` not in the text"))
}

#[test]
fn good_manifest_parses() {
    let m = parse("test.toml", GOOD).unwrap();
    assert_eq!(m.name, "demo");
    let person = m.entity("Person").unwrap();
    assert_eq!(person.canonical, "Person");
    assert_eq!(
        person.delta,
        Delta::Filter {
            param: "where[updated_at][gte]".into()
        }
    );
    assert_eq!(person.fields[0].name, "birthdate");
    assert_eq!(person.fields[0].ty, FieldType::Date);
    assert_eq!(person.fields[1].ty, FieldType::String);
    let email = m.entity("Email").unwrap();
    assert_eq!(email.delta, Delta::FullScan);
    assert_eq!(email.relationships[0].kind, DependencyKind::Hard);
    assert_eq!(
        m.graph.waves(),
        &[vec!["Person".to_string()], vec!["Email".to_string()]]
    );
}

#[test]
fn builtin_pco_manifest_is_valid_and_ordered() {
    let m = tributary_manifest::builtin("pco").unwrap().unwrap();
    assert_eq!(m.file, "builtin:pco");
    let names: Vec<&str> = m.entities.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "Address",
            "Campus",
            "Email",
            "Event",
            "Group",
            "GroupType",
            "Household",
            "HouseholdMembership",
            "Membership",
            "Person",
            "PhoneNumber"
        ]
    );
    insta::assert_snapshot!(m.graph.to_text());
    // PCO has no updated_at filter on addresses and memberships; an
    // address-only change does not move its person, so addresses are read
    // whole.
    assert_eq!(m.entity("Address").unwrap().delta, Delta::FullScan);
    assert_eq!(
        m.entity("HouseholdMembership").unwrap().delta,
        Delta::Parent
    );
    assert_eq!(
        m.entity("HouseholdMembership").unwrap().parent.as_deref(),
        Some("Household")
    );
    // Groups has no updated_at filter at all: group types, groups and events
    // are read whole; memberships are re-read under the groups that changed
    // (a membership that comes or goes moves its group's memberships_count).
    for name in ["GroupType", "Group", "Event"] {
        assert_eq!(m.entity(name).unwrap().delta, Delta::FullScan, "{name}");
    }
    let membership = m.entity("Membership").unwrap();
    assert_eq!(membership.delta, Delta::Parent);
    assert_eq!(membership.parent.as_deref(), Some("Group"));
    assert_eq!(membership.canonical, "GroupMembership");
}

#[test]
fn toml_syntax_error_names_line() {
    let text = GOOD.replace("list = \"/emails\"", "list = \"/emails");
    let d = one_error(&text);
    assert_eq!(d.file, "test.toml");
    assert_eq!(d.line, line_of(&text, "list = \"/emails"));
    assert!(d.help.contains("TOML syntax"), "{d}");
}

#[test]
fn unknown_key_is_rejected_with_expected_keys() {
    let text = GOOD.replace("list = \"/emails\"", "list = \"/emails\"\npaginate = true");
    let d = one_error(&text);
    assert_eq!(d.line, line_of(&text, "paginate"));
    assert!(d.message.starts_with("unknown field `paginate`"), "{d}");
    assert!(d.message.contains("`list`"), "lists expected keys: {d}");
    assert!(d.help.contains("spelling"), "{d}");
}

#[test]
fn missing_required_key_says_which() {
    let text = GOOD.replace("list = \"/emails\"\n", "");
    let d = one_error(&text);
    assert!(d.message.contains("missing field `list`"), "{d}");
    assert!(d.help.contains("add the required key `list`"), "{d}");
    assert_eq!(d.line, line_of(&text, "[entity.Email]"));
}

#[test]
fn wrong_enum_value_lists_choices() {
    let text = GOOD.replace("kind = \"hard\"", "kind = \"firm\"");
    let d = one_error(&text);
    assert_eq!(d.line, line_of(&text, "firm"));
    assert!(d.message.contains("unknown variant `firm`"), "{d}");
    assert!(
        d.message.contains("`hard`") && d.message.contains("`soft`"),
        "{d}"
    );
}

#[test]
fn unknown_field_type_is_rejected() {
    let text = GOOD.replace("type = \"date\"", "type = \"calendar\"");
    let d = one_error(&text);
    assert_eq!(d.line, line_of(&text, "calendar"));
    assert!(d.message.contains("unknown variant `calendar`"), "{d}");
}

#[test]
fn wrong_value_type_is_explained() {
    let text = GOOD.replace("\npage_size = 100", "\npage_size = \"a hundred\"");
    let d = one_error(&text);
    assert_eq!(d.line, line_of(&text, "a hundred"));
    assert!(d.message.contains("invalid type"), "{d}");
    assert!(d.help.contains("expected type"), "{d}");
}

#[test]
fn relationship_to_unknown_entity_suggests_names() {
    let text = GOOD.replace("to = \"Person\"", "to = \"person\"");
    let d = one_error(&text);
    assert_eq!(d.line, line_of(&text, "to = \"person\""));
    assert_eq!(
        d.message,
        "relationship `person` of `Email` points at `person`, which is not a declared entity"
    );
    assert_eq!(
        d.help,
        "did you mean `Person`? declared entities: Email, Person"
    );
}

#[test]
fn hard_cycle_is_named_at_its_line() {
    let text = format!(
        "{GOOD}\n[entity.Person.relationships]\nfavourite_email = {{ to = \"Email\", kind = \"hard\" }}\n"
    );
    let d = one_error(&text);
    assert_eq!(
        d.message,
        "hard dependencies form a cycle: Email -[person]-> Person -[favourite_email]-> Email"
    );
    assert!(d.help.contains("kind = \"soft\""), "{d}");
    assert_eq!(d.line, line_of(&text, "person = { to = \"Person\""));
}

#[test]
fn soft_cycle_is_accepted() {
    let text = format!(
        "{GOOD}\n[entity.Person.relationships]\nfavourite_email = {{ to = \"Email\", kind = \"soft\" }}\n"
    );
    let m = parse("test.toml", &text).unwrap();
    assert_eq!(m.graph.ignored().len(), 1);
}

#[test]
fn parent_placeholder_mismatch_is_reported() {
    let text = GOOD.replace(
        "list = \"/emails\"",
        "list = \"/people/{parent_id}/emails\"",
    );
    let d = one_error(&text);
    assert_eq!(
        d.message,
        "the list path uses {parent_id} but the entity has no parent"
    );
    assert!(d.help.contains("parent = "), "{d}");
    assert_eq!(d.line, line_of(&text, "{parent_id}"));

    let text = GOOD.replace(
        "list = \"/emails\"",
        "list = \"/emails\"\nparent = \"Person\"",
    );
    let d = one_error(&text);
    assert_eq!(d.message, "an entity with a parent must list under it");
}

#[test]
fn delta_filter_without_updated_at_is_reported() {
    let text = GOOD.replace("updated_at = \"updated_at\"\n", "");
    let d = one_error(&text);
    assert_eq!(
        d.message,
        "a delta filter needs the entity's updated_at attribute"
    );
    assert_eq!(d.line, line_of(&text, "delta = "));
}

#[test]
fn bad_page_size_and_base_url_are_both_reported() {
    let text = GOOD
        .replace("\npage_size = 100", "\npage_size = 500")
        .replace("https://api.example.com", "ftp://nope");
    let err = parse("test.toml", &text).unwrap_err();
    let messages: Vec<&str> = err.diagnostics.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "base_url `ftp://nope` is not an http(s) URL",
            "page_size 500 is outside 1..=100"
        ]
    );
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("test.toml:{}:", line_of(&text, "ftp://"))),
        "{shown}"
    );
    assert!(shown.contains("\n  help: "), "{shown}");
}

#[test]
fn field_shorthand_with_bad_shape_is_explained() {
    let text = GOOD.replace("first_name = \"first_name\"", "first_name = 7");
    let d = one_error(&text);
    assert!(d.message.contains("source attribute name"), "{d}");
    assert_eq!(d.line, line_of(&text, "first_name = 7"));
}

#[test]
fn unreadable_file_is_reported() {
    let err = tributary_manifest::load(std::path::Path::new("/nonexistent/m.toml")).unwrap_err();
    assert_eq!(err.diagnostics[0].file, "/nonexistent/m.toml");
    assert!(
        err.diagnostics[0]
            .message
            .starts_with("cannot read the manifest")
    );
}

/// Writes `bytes` to a fresh file under Cargo's scratch directory for tests.
fn temp_manifest(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn non_utf8_file_names_the_first_bad_byte() {
    // Latin-1 `é` (0xe9) after a multi-byte UTF-8 `ë`: the column counts
    // characters, not bytes.
    let mut bytes = GOOD
        .replace("name = \"demo\"", "name = \"demo\"\ntitle = \"Zoë ")
        .into_bytes();
    let at = bytes
        .windows(5)
        .position(|w| w == "Zoë ".as_bytes())
        .unwrap()
        + 5;
    bytes.splice(at..at, *b"d\xe9j\xe0 vu\"");
    let path = temp_manifest("latin1.toml", &bytes);
    let err = tributary_manifest::load(&path).unwrap_err();
    assert_eq!(
        err.diagnostics,
        [Diagnostic {
            file: path.display().to_string(),
            line: line_of(GOOD, "name = \"demo\"") + 1,
            column: 15,
            message: "the file is not UTF-8: invalid byte sequence starting with 0xe9".into(),
            help: "save the file as UTF-8".into(),
        }]
    );
}

#[test]
fn unreadable_file_names_the_os_cause_once() {
    // A directory opens but cannot be read as a file.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let cause = std::fs::read(dir).unwrap_err().to_string();
    let err = tributary_manifest::load(dir).unwrap_err();
    assert_eq!(
        err.diagnostics,
        [Diagnostic {
            file: dir.display().to_string(),
            line: 0,
            column: 0,
            message: format!("cannot read the manifest: {cause}"),
            help: "check the path and that the file is readable".into(),
        }]
    );
    assert_eq!(err.to_string().matches(&cause).count(), 1, "{err}");
}

/// GOOD with a rate limit and a parent-listed entity, so that every
/// whole-number key is present.
fn with_every_number() -> String {
    format!(
        "{GOOD}\n[entity.Note]\nlist = \"/people/{{parent_id}}/notes\"\nparent = \"Person\"\nconcurrency = 4\n\n[rate_limit]\nrequests = 100\nperiod_secs = 20\n"
    )
}

/// Replaces `key = old` by `key = new` and checks the single diagnostic
/// word for word, at the value's line and column.
fn assert_number_error(key: &str, old: &str, new: &str, message: &str, help: &str) {
    let text = with_every_number().replacen(
        &format!("\n{key} = {old}\n"),
        &format!("\n{key} = {new}\n"),
        1,
    );
    let written = format!("{key} = {new}");
    let line = line_of(&text, &written);
    assert_eq!(
        one_error(&text),
        Diagnostic {
            file: "test.toml".into(),
            line,
            column: key.len() + 4,
            message: message.into(),
            help: help.into(),
        },
        "{written}"
    );
}

#[test]
fn negative_and_fractional_numbers_name_the_key() {
    parse("test.toml", &with_every_number()).unwrap();
    let cases = [
        ("page_size", "100", "-5", "got -5", "from 1 to 100"),
        ("page_size", "100", "2.5", "got 2.5", "from 1 to 100"),
        ("max_page_size", "100", "-100", "got -100", "of 1 or more"),
        ("concurrency", "4", "-1", "got -1", "from 1 to 64"),
        ("requests", "100", "-5", "got -5", "of 1 or more"),
        ("period_secs", "20", "-20", "got -20", "of 1 or more"),
        ("period_secs", "20", "0.5", "got 0.5", "of 1 or more"),
    ];
    for (key, old, new, got, range) in cases {
        assert_number_error(
            key,
            old,
            new,
            &format!("`{key}` must be a positive whole number, {got}"),
            &format!("use a whole number {range}"),
        );
    }
    assert_number_error(
        "requests",
        "100",
        "5000000000",
        "`requests` must be a whole number from 1 to 4294967295, got 5000000000",
        "use a whole number from 1 to 4294967295",
    );
}

#[test]
fn zero_is_rejected_where_a_count_must_be_positive() {
    let cases = [
        ("page_size", "100", "use a whole number from 1 to 100"),
        ("max_page_size", "100", "use a whole number of 1 or more"),
        ("concurrency", "4", "use a whole number from 1 to 64"),
        ("requests", "100", "use a whole number of 1 or more"),
        ("period_secs", "20", "use a whole number of 1 or more"),
    ];
    for (key, old, help) in cases {
        assert_number_error(
            key,
            old,
            "0",
            &format!("`{key}` must be a positive whole number, got 0"),
            help,
        );
    }
}

#[test]
fn paging_style_must_suit_the_format() {
    let text = GOOD.replace(
        "base_url = \"https://api.example.com\"",
        "base_url = \"https://api.example.com\"\nformat = \"json\"",
    );
    assert_eq!(
        one_error(&text),
        Diagnostic {
            file: "test.toml".into(),
            line: line_of(&text, "style = "),
            column: 9,
            message: "a plain JSON adapter (format = \"json\") cannot page with style = \"jsonapi_offset\"".into(),
            help: "use style = \"limit_offset\" for plain JSON, or set [adapter] format = \"jsonapi\"".into(),
        }
    );
    parse(
        "test.toml",
        &text.replace("\"jsonapi_offset\"", "\"limit_offset\""),
    )
    .unwrap();

    let text = GOOD.replace("\"jsonapi_offset\"", "\"limit_offset\"");
    assert_eq!(
        one_error(&text),
        Diagnostic {
            file: "test.toml".into(),
            line: line_of(&text, "style = "),
            column: 9,
            message: "a JSON:API adapter must page with style = \"jsonapi_offset\"".into(),
            help: "set [pagination] style = \"jsonapi_offset\", or format = \"json\" for plain JSON APIs".into(),
        }
    );
}

#[test]
fn parent_include_through_a_parent_without_a_filter_is_reported() {
    let text = GOOD
        .replace(
            "[entity.Person]\nlist = \"/people\"",
            "[entity.Person]\nlist = \"/people\"\ninclude = { emails = \"Email\" }",
        )
        .replace(
            "[entity.Email]\nlist = \"/emails\"",
            "[entity.Email]\nlist = \"/emails\"\ndelta = { strategy = \"parent_include\", parent = \"Person\", include = \"emails\" }",
        );
    // With the parent's filter: valid.
    let m = parse("test.toml", &text).unwrap();
    assert!(matches!(
        m.entity("Email").unwrap().delta,
        Delta::ParentInclude { .. }
    ));
    // Without it, the entity's delta line is named, with the fix.
    let text = text.replace(
        "delta = { strategy = \"filter\", param = \"where[updated_at][gte]\" }\n",
        "",
    );
    let d = one_error(&text);
    assert_eq!(
        d.message,
        "`Person` cannot be asked for its changes, so its include cannot carry `Email`'s"
    );
    assert_eq!(d.line, line_of(&text, "strategy = \"parent_include\""));
    assert!(d.help.contains("full_scan"), "{d}");
}
