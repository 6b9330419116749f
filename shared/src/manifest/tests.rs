//! Manifest parsing tests, data-driven: a manifest and the exact problems it has,
//! or the manifest it parses to.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::*;

/// The text of a test manifest: written after a newline for readability, which
/// is not part of it (so line 1 is the first line shown).
fn text(yaml: &str) -> &str {
    yaml.strip_prefix('\n').unwrap_or(yaml)
}

#[track_caller]
fn check_err(yaml: &str, expected: &[&str]) {
    let errors = match Manifest::parse(text(yaml)) {
        Ok(manifest) => panic!("expected problems, parsed {manifest:#?}\n{yaml}"),
        Err(errors) => errors,
    };
    let actual: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(actual, expected, "{yaml}");
}

#[track_caller]
fn check_ok(yaml: &str) -> Manifest {
    match Manifest::parse(text(yaml)) {
        Ok(manifest) => manifest,
        Err(errors) => panic!("expected no problems, found:\n{errors}\n{yaml}"),
    }
}

fn name(name: &str) -> ComponentName {
    ComponentName::new(name).expect("valid name")
}

fn image(image: &str) -> Build {
    Build::Image {
        image: image.to_owned(),
    }
}

// ---------------------------------------------------------------- valid input

#[test]
fn the_toolhunt_example_parses() {
    let manifest = check_ok(include_str!("../../../examples/toolhunt/toolhunt.yaml"));
    let api = Component {
        description: Some("a python-flask api".to_owned()),
        kind: ComponentType::Continuous,
        build: Build::Repository {
            repository: "https://github.com/wikimedia/toolhunt".to_owned(),
            git_ref: Some("main".to_owned()),
        },
        build_id: Some("v3".to_owned()),
        run: Run {
            command: Some("gunicorn app:app".to_owned()),
            replicas: Some(2),
            port: Some(8000),
            env: BTreeMap::from([("LOG_LEVEL".to_owned(), "info".to_owned())]),
            schedule: None,
        },
        wait_for: vec![name("toolhunt-migratedb")],
        on_update: None,
    };
    let migratedb = Component {
        description: Some("applies the database migrations before the api starts".to_owned()),
        kind: ComponentType::OneOff,
        build: Build::ReuseFrom {
            reuse_from: name("toolhunt-api"),
        },
        build_id: None,
        run: Run {
            command: Some("migratedb".to_owned()),
            ..Run::default()
        },
        wait_for: vec![],
        on_update: None,
    };
    let cleanup = Component {
        description: Some("hourly removal of stale sessions".to_owned()),
        kind: ComponentType::Scheduled,
        build: image("registry.example/cleanup:1.4"),
        build_id: None,
        run: Run {
            command: Some("cleanup".to_owned()),
            schedule: Some("00 * * * *".to_owned()),
            ..Run::default()
        },
        wait_for: vec![name("toolhunt-api")],
        on_update: None,
    };
    let flower = Component {
        description: Some("the celery flower dashboard".to_owned()),
        kind: ComponentType::Continuous,
        build: Build::ReuseFrom {
            reuse_from: name("toolhunt-api"),
        },
        build_id: None,
        run: Run {
            command: Some("celery flower".to_owned()),
            port: Some(5555),
            ..Run::default()
        },
        wait_for: vec![name("toolhunt-api")],
        on_update: None,
    };
    let expected = Manifest {
        config_version: "0.1".to_owned(),
        components: BTreeMap::from([
            (name("toolhunt-api"), api),
            (name("toolhunt-migratedb"), migratedb),
            (name("toolhunt-cleanup"), cleanup),
            (name("toolhunt-flower"), flower),
        ]),
    };
    assert_eq!(manifest, expected);
    assert_eq!(
        manifest.artifact_source(&name("toolhunt-flower")),
        &name("toolhunt-api")
    );
}

#[test]
fn the_design_example_parses() {
    let manifest = check_ok(
        r#"
config-version: 0.1
components:
  toolhunt-api:
    description: a python-flask api
    type: continuous            # continuous | scheduled | one-off
    build:
      repository: https://github.com/wikimedia/toolhunt
      ref: main                 # optional
    build-id: v3                # optional stable build id (section 5.4)
    run:
      command: gunicorn app:app
      replicas: 2               # continuous only
      port: 8000                # continuous only
      env: {LOG_LEVEL: info}
    wait-for: [toolhunt-migratedb]
    on-update: {deploy: true}   # optional (section 5.5)
  toolhunt-migratedb:
    type: one-off
    build: {reuse-from: toolhunt-api}
    run: {command: migratedb}
  toolhunt-cleanup:
    type: scheduled
    build: {image: registry.example/cleanup:1.4}
    run: {command: cleanup, schedule: "00 * * * *"}
    wait-for: [toolhunt-api]
"#,
    );
    let api = &manifest.components[&name("toolhunt-api")];
    assert_eq!(api.on_update, Some(OnUpdate { deploy: true }));
    assert_eq!(manifest.components.len(), 3);
}

#[test]
fn optional_fields_take_their_defaults() {
    let manifest = check_ok(
        "
config-version: '0.1'
components:
  web:
    type: continuous
    build: {image: nginx}
    on-update: {}
",
    );
    let expected = Component {
        description: None,
        kind: ComponentType::Continuous,
        build: image("nginx"),
        build_id: None,
        run: Run::default(),
        wait_for: vec![],
        on_update: Some(OnUpdate { deploy: false }),
    };
    assert_eq!(manifest.components[&name("web")], expected);
}

#[test]
fn integers_are_accepted_where_text_is_expected_and_lossless() {
    let manifest = check_ok(
        "
config-version: 0.1
components:
  web:
    type: continuous
    build: {image: nginx}
    build-id: 3
    run:
      env: {PORT: 8080, NAME: web, EMPTY: ''}
",
    );
    let web = &manifest.components[&name("web")];
    assert_eq!(web.build_id.as_deref(), Some("3"));
    let env: Vec<(&str, &str)> = web
        .run
        .env
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    assert_eq!(env, [("EMPTY", ""), ("NAME", "web"), ("PORT", "8080")]);
}

#[test]
fn yaml_1_1_booleans_are_plain_text() {
    // The "Norway problem": `no` is the string "no", not false.
    let manifest = check_ok(
        "
config-version: 0.1
components:
  web:
    description: no
    type: continuous
    build: {image: nginx}
    run: {command: yes, env: {COUNTRY: NO}}
",
    );
    let web = &manifest.components[&name("web")];
    assert_eq!(web.description.as_deref(), Some("no"));
    assert_eq!(web.run.command.as_deref(), Some("yes"));
    assert_eq!(web.run.env["COUNTRY"], "NO");
}

#[test]
fn json_is_accepted() {
    let manifest = check_ok(
        r#"
{
  "config-version": "0.1",
  "components": {
    "api": {"type": "continuous", "build": {"image": "api:1"}, "run": {"port": 80}},
    "cron": {
      "type": "scheduled",
      "build": {"reuse-from": "api"},
      "run": {"schedule": "*/5 * * * *"},
      "wait-for": ["api"]
    }
  }
}
"#,
    );
    assert_eq!(manifest.components[&name("api")].run.port, Some(80));
    assert_eq!(
        manifest.components[&name("cron")].reuse_from(),
        Some(&name("api"))
    );
}

#[test]
fn the_manifest_round_trips_through_json() {
    let manifest = check_ok(include_str!("../../../examples/toolhunt/toolhunt.yaml"));
    let json = serde_json::to_string(&manifest).expect("serializable");
    let back: Manifest = serde_json::from_str(&json).expect("deserializable");
    assert_eq!(back, manifest);
    // And the stored JSON is itself a valid manifest.
    assert_eq!(check_ok(&json), manifest);
}

#[test]
fn reuse_from_may_take_several_hops() {
    let manifest = check_ok(
        "
config-version: 0.1
components:
  c:
    type: one-off
    build: {reuse-from: b}
  b:
    type: one-off
    build: {reuse-from: a}
  a:
    type: continuous
    build: {repository: https://example.org/a.git}
",
    );
    assert_eq!(manifest.artifact_source(&name("c")), &name("a"));
}

#[test]
fn small_anchors_and_merge_keys_are_allowed() {
    let manifest = check_ok(
        "
config-version: 0.1
components:
  api: &service
    type: continuous
    build: {image: app:1}
    run:
      env: &env {LOG_LEVEL: info, REGION: eu}
  worker:
    <<: *service
    run:
      command: work
      env: *env
",
    );
    let api = &manifest.components[&name("api")];
    let worker = &manifest.components[&name("worker")];
    assert_eq!(worker.kind, ComponentType::Continuous);
    assert_eq!(worker.build, api.build);
    assert_eq!(worker.run.env, api.run.env);
    assert_eq!(worker.run.command.as_deref(), Some("work"));
}

// ----------------------------------------------------------- the document

#[test]
fn the_document_is_a_mapping() {
    check_err(
        "",
        &["1:1: the manifest is empty; expected `config-version` and `components`"],
    );
    check_err(
        "# nothing here\n",
        &["2:1: the manifest is empty; expected `config-version` and `components`"],
    );
    check_err(
        "- a\n- b\n",
        &["1:1: expected a mapping with `config-version` and `components`, found a sequence"],
    );
    check_err(
        "just text\n",
        &["1:1: expected a mapping with `config-version` and `components`, found a string"],
    );
}

#[test]
fn top_level_fields_are_required() {
    check_err(
        "config-version: 0.1\n",
        &["1:1: missing field `components`"],
    );
    check_err(
        "
components:
  web: {type: continuous, build: {image: nginx}}
",
        &["1:1: missing field `config-version` (this drover supports `0.1`)"],
    );
}

#[test]
fn unknown_top_level_fields() {
    check_err(
        "
config-version: 0.1
component:
  web: {type: continuous, build: {image: nginx}}
",
        &[
            "1:1: missing field `components`",
            "2:1: unknown field `component` (did you mean `components`?)",
        ],
    );
    check_err(
        "
config-version: 0.1
name: shop
components:
  web: {type: continuous, build: {image: nginx}}
",
        &["2:1: unknown field `name`; expected `config-version` or `components`"],
    );
}

#[test]
fn config_version_must_be_supported() {
    let cases: [(&str, &[&str]); 6] = [
        (
            "0.2",
            &[
                "1:17: field `config-version`: unsupported config version `0.2`; this drover supports `0.1`",
            ],
        ),
        (
            "'0.2'",
            &[
                "1:17: field `config-version`: unsupported config version `0.2`; this drover supports `0.1`",
            ],
        ),
        (
            "1",
            &[
                "1:17: field `config-version`: unsupported config version `1`; this drover supports `0.1`",
            ],
        ),
        (
            "0.10.1",
            &[
                "1:17: field `config-version`: unsupported config version `0.10.1`; this drover supports `0.1`",
            ],
        ),
        (
            "[0.1]",
            &["1:17: field `config-version`: expected `0.1`, found a sequence"],
        ),
        (
            "~",
            &["1:17: field `config-version`: expected `0.1`, found null"],
        ),
    ];
    for (version, expected) in cases {
        check_err(
            &format!(
                "
config-version: {version}
components:
  web: {{type: continuous, build: {{image: nginx}}}}
"
            ),
            expected,
        );
    }
}

#[test]
fn components_is_a_non_empty_mapping() {
    check_err(
        "config-version: 0.1\ncomponents: {}\n",
        &["2:1: field `components`: must declare at least one component"],
    );
    check_err(
        "config-version: 0.1\ncomponents:\n",
        &["2:11: field `components`: expected a mapping, found null"],
    );
    check_err(
        "config-version: 0.1\ncomponents: [web]\n",
        &["2:13: field `components`: expected a mapping, found a sequence"],
    );
}

// ---------------------------------------------------------- a component

#[test]
fn component_names_are_dns_labels() {
    check_err(
        &format!(
            "
config-version: 0.1
components:
  Web_1:
    type: continuous
    build: {{image: nginx}}
  {}:
    type: continuous
    build: {{image: nginx}}
  '':
    type: continuous
    build: {{image: nginx}}
",
            "a".repeat(64)
        ),
        &[
            "3:3: component `Web_1`: name must consist of lower-case letters, digits and `-`, and start and end with a letter or digit",
            "6:3: component `aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa`: name is 64 characters long; at most 63 are allowed",
            "9:3: component ``: name must not be empty",
        ],
    );
}

#[test]
fn non_string_keys_are_refused() {
    check_err(
        "
config-version: 0.1
components:
  123:
    type: continuous
    build: {image: nginx}
  web:
    type: continuous
    build: {image: nginx}
    run:
      env: {true: x}
",
        &[
            "3:3: field `components`: expected a string as a key, found an integer; quote it",
            "10:13: component `web`, field `run.env`: expected a string as a key, found a boolean; quote it",
        ],
    );
}

#[test]
fn a_component_is_a_mapping() {
    check_err(
        "
config-version: 0.1
components:
  web: nginx
",
        &["3:8: component `web`: expected a mapping, found a string"],
    );
}

#[test]
fn type_and_build_are_required() {
    check_err(
        "
config-version: 0.1
components:
  web:
    description: the web server
",
        &[
            "3:3: component `web`: missing field `type`",
            "3:3: component `web`: missing field `build`",
        ],
    );
}

#[test]
fn type_is_one_of_three() {
    check_err(
        "
config-version: 0.1
components:
  a:
    type: continous
    build: {image: nginx}
  b:
    type: cron
    build: {image: nginx}
  c:
    type: 3
    build: {image: nginx}
",
        &[
            "4:11: component `a`, field `type`: unknown type `continous` (did you mean `continuous`?)",
            "7:11: component `b`, field `type`: unknown type `cron`; expected `continuous`, `scheduled` or `one-off`",
            "10:11: component `c`, field `type`: expected one of `continuous`, `scheduled` or `one-off`, found an integer",
        ],
    );
}

#[test]
fn unknown_fields_get_a_hint() {
    check_err(
        "
config-version: 0.1
components:
  web:
    type: continuous
    build: {image: nginx, repo: x}
    wait_for: []
    colour: blue
    run:
      replica: 2
    on-update: {deplyo: true}
",
        &[
            "5:27: component `web`, field `build`: unknown field `repo` (did you mean `repository`?)",
            "6:5: component `web`: unknown field `wait_for` (did you mean `wait-for`?)",
            "7:5: component `web`: unknown field `colour`; expected `description`, `type`, `build`, `build-id`, `run`, `wait-for` or `on-update`",
            "9:7: component `web`, field `run`: unknown field `replica` (did you mean `replicas`?)",
            "10:17: component `web`, field `on-update`: unknown field `deplyo` (did you mean `deploy`?)",
        ],
    );
}

#[test]
fn duplicate_keys_are_refused() {
    check_err(
        "
config-version: 0.1
components:
  web:
    type: continuous
    build: {image: nginx}
    type: one-off
    run:
      env:
        A: x
        A: y
  web:
    type: continuous
    build: {image: nginx}
",
        &[
            "6:5: component `web`: duplicate field `type` (first given on line 4)",
            "10:9: component `web`, field `run.env`: duplicate variable `A` (first given on line 9)",
            "11:3: field `components`: duplicate component `web` (first given on line 3)",
        ],
    );
}

#[test]
fn string_fields_are_strings() {
    check_err(
        "
config-version: 0.1
components:
  web:
    description: 1.10
    type: continuous
    build: {image: 1.4}
    run:
      command: true
",
        &[
            "4:18: component `web`, field `description`: expected a string, found a float; quote it",
            "6:20: component `web`, field `build.image`: expected a string, found a float; quote it",
            "8:16: component `web`, field `run.command`: expected a string, found a boolean; quote it",
        ],
    );
}

// ---------------------------------------------------------------- build

#[test]
fn build_is_a_mapping() {
    check_err(
        "
config-version: 0.1
components:
  web:
    type: continuous
    build: nginx
",
        &["5:12: component `web`, field `build`: expected a mapping, found a string"],
    );
}

#[test]
fn build_has_a_source() {
    check_err(
        "
config-version: 0.1
components:
  web:
    type: continuous
    build: {}
  api:
    type: continuous
    build: {ref: main}
",
        &[
            "5:5: component `web`, field `build`: expected one of `repository`, `reuse-from` or `image`",
            "8:5: component `api`, field `build`: expected one of `repository`, `reuse-from` or `image`",
        ],
    );
}

#[test]
fn build_has_only_one_source() {
    check_err(
        "
config-version: 0.1
components:
  web:
    type: continuous
    build: {repository: https://example.org/web.git, image: nginx}
  api:
    type: continuous
    build: {repository: https://example.org/api.git, reuse-from: web, image: api}
",
        &[
            "5:5: component `web`, field `build`: expected exactly one of `repository`, `reuse-from` or `image`, found `repository` and `image`",
            "8:5: component `api`, field `build`: expected exactly one of `repository`, `reuse-from` or `image`, found `repository`, `reuse-from` and `image`",
        ],
    );
}

#[test]
fn ref_goes_with_repository() {
    check_err(
        "
config-version: 0.1
components:
  web:
    type: continuous
    build: {image: nginx, ref: main}
",
        &["5:27: component `web`, field `build.ref`: `ref` is only allowed with `repository`"],
    );
}

#[test]
fn build_sources_are_not_empty() {
    check_err(
        "
config-version: 0.1
components:
  web:
    type: continuous
    build: {repository: ''}
",
        &["5:25: component `web`, field `build.repository`: must not be empty"],
    );
}

#[test]
fn build_id_is_text() {
    check_err(
        "
config-version: 0.1
components:
  web:
    type: continuous
    build: {image: nginx}
    build-id: 1.10
  api:
    type: continuous
    build: {image: api}
    build-id: {v: 3}
",
        &[
            "6:15: component `web`, field `build-id`: expected a string, found a float; quote it",
            "10:15: component `api`, field `build-id`: expected a string, found a mapping",
        ],
    );
}

// ----------------------------------------------------------------- run

#[test]
fn run_is_a_mapping() {
    check_err(
        "
config-version: 0.1
components:
  web:
    type: continuous
    build: {image: nginx}
    run: nginx -g daemon-off
",
        &["6:10: component `web`, field `run`: expected a mapping, found a string"],
    );
}

#[test]
fn replicas_and_port_are_integers_in_range() {
    check_err(
        "
config-version: 0.1
components:
  web:
    type: continuous
    build: {image: nginx}
    run:
      replicas: two
      port: http
  api:
    type: continuous
    build: {image: api}
    run:
      replicas: 0
      port: 70000
  db:
    type: continuous
    build: {image: db}
    run:
      replicas: 1.5
      port: 0
",
        &[
            "7:17: component `web`, field `run.replicas`: expected an integer, found a string",
            "8:13: component `web`, field `run.port`: expected an integer, found a string",
            "13:17: component `api`, field `run.replicas`: expected an integer from 1 to 4294967295, found 0",
            "14:13: component `api`, field `run.port`: expected an integer from 1 to 65535, found 70000",
            "19:17: component `db`, field `run.replicas`: expected an integer, found a float",
            "20:13: component `db`, field `run.port`: expected an integer from 1 to 65535, found 0",
        ],
    );
}

#[test]
fn replicas_and_port_are_for_continuous_components() {
    check_err(
        "
config-version: 0.1
components:
  migrate:
    type: one-off
    build: {image: app}
    run:
      replicas: 2
      port: 80
  cleanup:
    type: scheduled
    build: {image: app}
    run: {schedule: 0 * * * *, port: 80}
",
        &[
            "7:7: component `migrate`, field `run.replicas`: `replicas` is only allowed for `continuous` components, not `one-off`",
            "8:7: component `migrate`, field `run.port`: `port` is only allowed for `continuous` components, not `one-off`",
            "12:32: component `cleanup`, field `run.port`: `port` is only allowed for `continuous` components, not `scheduled`",
        ],
    );
}

#[test]
fn env_maps_names_to_text() {
    check_err(
        "
config-version: 0.1
components:
  web:
    type: continuous
    build: {image: nginx}
    run:
      env:
        DEBUG: true
        RATIO: 0.5
        EMPTY:
        1ST: x
        LOG-LEVEL: info
  api:
    type: continuous
    build: {image: api}
    run:
      env: [A=1]
",
        &[
            "8:16: component `web`, field `run.env.DEBUG`: expected a string, found a boolean; quote it",
            "9:16: component `web`, field `run.env.RATIO`: expected a string, found a float; quote it",
            "10:14: component `web`, field `run.env.EMPTY`: expected a string, found null",
            "11:9: component `web`, field `run.env`: invalid environment variable name `1ST`: use letters, digits and `_`, and do not start with a digit",
            "12:9: component `web`, field `run.env`: invalid environment variable name `LOG-LEVEL`: use letters, digits and `_`, and do not start with a digit",
            "17:12: component `api`, field `run.env`: expected a mapping, found a sequence",
        ],
    );
}

// ------------------------------------------------------------ schedule

#[test]
fn scheduled_components_need_a_schedule() {
    check_err(
        "
config-version: 0.1
components:
  cleanup:
    type: scheduled
    build: {image: app}
    run: {command: cleanup}
  report:
    type: scheduled
    build: {image: app}
",
        &[
            "6:5: component `cleanup`, field `run`: missing field `schedule` (required for `scheduled` components)",
            "7:3: component `report`: missing field `run` (a `scheduled` component needs `run.schedule`)",
        ],
    );
}

#[test]
fn only_scheduled_components_have_a_schedule() {
    check_err(
        "
config-version: 0.1
components:
  web:
    type: continuous
    build: {image: nginx}
    run: {schedule: 0 * * * *}
  migrate:
    type: one-off
    build: {image: app}
    run: {schedule: 0 * * * *}
",
        &[
            "6:11: component `web`, field `run.schedule`: `schedule` is only allowed for `scheduled` components, not `continuous`",
            "10:11: component `migrate`, field `run.schedule`: `schedule` is only allowed for `scheduled` components, not `one-off`",
        ],
    );
}

#[test]
fn schedules_are_5_field_cron_expressions() {
    check_err(
        "
config-version: 0.1
components:
  a:
    type: scheduled
    build: {image: app}
    run: {schedule: '@hourly'}
  b:
    type: scheduled
    build: {image: app}
    run: {schedule: 0 0 * * * *}
  c:
    type: scheduled
    build: {image: app}
    run: {schedule: 61 * * * *}
  d:
    type: scheduled
    build: {image: app}
    run: {schedule: 5}
",
        &[
            "6:21: component `a`, field `run.schedule`: `@hourly` is not supported; write `0 * * * *`",
            "10:21: component `b`, field `run.schedule`: expected 5 fields (minute hour day-of-month month day-of-week), found 6; seconds and years are not supported",
            "14:21: component `c`, field `run.schedule`: invalid minute `61` in cron expression `61 * * * *`: number out of bounds",
            "18:21: component `d`, field `run.schedule`: expected a string, found an integer; quote it",
        ],
    );
}

// ------------------------------------------------------------- wait-for

#[test]
fn wait_for_names_other_components() {
    check_err(
        "
config-version: 0.1
components:
  api:
    type: continuous
    build: {image: api}
    wait-for: [apu, api, db, db, cache]
  db:
    type: continuous
    build: {image: db}
",
        &[
            "6:16: component `api`, field `wait-for`: unknown component `apu` (did you mean `api`?)",
            "6:21: component `api`, field `wait-for`: a component cannot wait for itself",
            "6:30: component `api`, field `wait-for`: `db` is listed more than once",
            "6:34: component `api`, field `wait-for`: unknown component `cache`",
        ],
    );
}

#[test]
fn wait_for_is_a_sequence_of_names() {
    check_err(
        "
config-version: 0.1
components:
  api:
    type: continuous
    build: {image: api}
    wait-for: db
  db:
    type: continuous
    build: {image: db}
    wait-for: [1, {x: y}]
  web:
    type: continuous
    build: {image: web}
    wait-for: {api: true}
",
        &[
            "6:15: component `api`, field `wait-for`: expected a sequence of component names, found a string; write `[db]`",
            "10:16: component `db`, field `wait-for`: expected a component name, found an integer; quote it",
            "10:19: component `db`, field `wait-for`: expected a component name, found a mapping",
            "14:15: component `web`, field `wait-for`: expected a sequence of component names, found a mapping",
        ],
    );
}

#[test]
fn wait_for_has_no_cycles() {
    check_err(
        "
config-version: 0.1
components:
  a:
    type: continuous
    build: {image: a}
    wait-for: [b]
  b:
    type: continuous
    build: {image: b}
    wait-for: [c]
  c:
    type: continuous
    build: {image: c}
    wait-for: [a, d]
  d:
    type: continuous
    build: {image: d}
    wait-for: [d2]
  d2:
    type: continuous
    build: {image: d}
    wait-for: [d]
",
        &[
            "6:16: component `a`, field `wait-for`: wait-for cycle: a -> b -> c -> a",
            "18:16: component `d`, field `wait-for`: wait-for cycle: d -> d2 -> d",
        ],
    );
}

#[test]
fn wait_for_cycles_through_one_component_are_each_reported() {
    check_err(
        "
config-version: 0.1
components:
  a:
    type: continuous
    build: {image: a}
    wait-for: [b]
  b:
    type: continuous
    build: {image: b}
    wait-for: [a, c]
  c:
    type: continuous
    build: {image: c}
    wait-for: [a]
",
        &[
            "6:16: component `a`, field `wait-for`: wait-for cycle: a -> b -> a",
            "6:16: component `a`, field `wait-for`: wait-for cycle: a -> b -> c -> a",
        ],
    );
}

// ----------------------------------------------------------- reuse-from

#[test]
fn reuse_from_names_another_component() {
    check_err(
        "
config-version: 0.1
components:
  api:
    type: continuous
    build: {repository: https://example.org/api.git}
  worker:
    type: continuous
    build: {reuse-from: apy}
  self:
    type: continuous
    build: {reuse-from: self}
  other:
    type: continuous
    build: {reuse-from: nothing-like-it}
",
        &[
            "8:25: component `worker`, field `build.reuse-from`: unknown component `apy` (did you mean `api`?)",
            "11:25: component `self`, field `build.reuse-from`: a component cannot reuse its own build",
            "14:25: component `other`, field `build.reuse-from`: unknown component `nothing-like-it`",
        ],
    );
}

#[test]
fn reuse_from_has_no_cycles() {
    check_err(
        "
config-version: 0.1
components:
  a:
    type: continuous
    build: {reuse-from: b}
  b:
    type: continuous
    build: {reuse-from: c}
  c:
    type: continuous
    build: {reuse-from: a}
  d:
    type: continuous
    build: {reuse-from: a}
",
        &["5:25: component `a`, field `build.reuse-from`: reuse-from cycle: a -> b -> c -> a"],
    );
}

#[test]
fn reuse_from_a_broken_build_reports_only_the_broken_build() {
    check_err(
        "
config-version: 0.1
components:
  a:
    type: continuous
    build: {image: 7}
  b:
    type: continuous
    build: {reuse-from: a}
",
        &[
            "5:20: component `a`, field `build.image`: expected a string, found an integer; quote it",
        ],
    );
}

// ------------------------------------------------------------ on-update

#[test]
fn on_update_deploy_is_a_boolean() {
    check_err(
        "
config-version: 0.1
components:
  a:
    type: continuous
    build: {image: a}
    on-update: {deploy: yes}
  b:
    type: continuous
    build: {image: b}
    on-update: {deploy: 1}
  c:
    type: continuous
    build: {image: c}
    on-update: true
",
        &[
            "6:25: component `a`, field `on-update.deploy`: expected a boolean, found a string; write `true` or `false`",
            "10:25: component `b`, field `on-update.deploy`: expected a boolean, found an integer",
            "14:16: component `c`, field `on-update`: expected a mapping, found a boolean",
        ],
    );
}

// ------------------------------------------------------ many problems

#[test]
fn every_problem_is_reported_in_document_order() {
    check_err(
        "
config-version: 0.2
components:
  api:
    type: continuous
    build: {repository: https://example.org/api.git}
    run:
      replicas: many
    wait-for: [worker, db]
  worker:
    typ: one-off
    build: {reuse-from: api}
    run: {port: http}
  db:
    type: continuous
    build: {image: postgres}
    wait-for: [api]
",
        &[
            "1:17: field `config-version`: unsupported config version `0.2`; this drover supports `0.1`",
            "7:17: component `api`, field `run.replicas`: expected an integer, found a string",
            "8:24: component `api`, field `wait-for`: wait-for cycle: api -> db -> api",
            "9:3: component `worker`: missing field `type`",
            "10:5: component `worker`: unknown field `typ` (did you mean `type`?)",
            "12:17: component `worker`, field `run.port`: expected an integer, found a string",
        ],
    );
}

// ------------------------------------------------------ YAML errors

#[test]
fn yaml_syntax_errors_name_their_component() {
    check_err(
        "
config-version: 0.1
components:
  web:
    type: continuous
    build: {image: nginx}
  api:
    type: continuous
    build: {image: [api}
",
        &["8:20: component `api`: mismatched bracket '[' closed by '}'"],
    );
    check_err(
        "
config-version: 0.1
components: {web: {type: continuous, build: {image: nginx}}
",
        &["2:13: unclosed bracket '{'"],
    );
    check_err(
        "config-version: \"0.1\ncomponents: {}\n",
        &["1:17: unclosed quote"],
    );
}

#[test]
fn a_manifest_is_one_document() {
    check_err(
        "
config-version: 0.1
components:
  web: {type: continuous, build: {image: nginx}}
---
config-version: 0.1
",
        &["4:1: a manifest is a single YAML document; remove the second `---`"],
    );
}

#[test]
fn unknown_tags_are_refused() {
    check_err(
        "
config-version: 0.1
components:
  web:
    type: !!str continuous
    build: {image: !secret nginx}
",
        &["5:28: component `web`: unsupported tag `!secret`"],
    );
}

// ------------------------------------------------------------ limits

/// A valid component named `name`, padded with a description to about `size` bytes.
fn padded_component(out: &mut String, name: &str, size: usize) {
    let before = out.len();
    let _ = write!(
        out,
        "  {name}:\n    type: continuous\n    build: {{image: registry.example/{name}:1}}\n    \
         run:\n      command: serve\n      env: {{A: '1', B: two}}\n    description: "
    );
    let used = out.len() - before;
    out.push_str(&"x".repeat(size.saturating_sub(used + 1).max(1)));
    out.push('\n');
}

#[test]
fn manifests_are_at_most_1_mib() {
    let mut yaml = String::from("config-version: 0.1\ncomponents:\n");
    let size = MAX_MANIFEST_BYTES + 1 - yaml.len();
    padded_component(&mut yaml, "web", size);
    assert_eq!(yaml.len(), MAX_MANIFEST_BYTES + 1);
    check_err(
        &yaml,
        &["manifest is 1048577 bytes; at most 1048576 are allowed"],
    );
}

#[test]
fn a_full_size_manifest_parses() {
    let mut yaml = String::from("config-version: 0.1\ncomponents:\n");
    let size = (MAX_MANIFEST_BYTES - yaml.len()) / MAX_COMPONENTS;
    for idx in 0..MAX_COMPONENTS {
        padded_component(&mut yaml, &format!("c{idx}"), size);
    }
    assert!(yaml.len() > MAX_MANIFEST_BYTES - 1000, "{}", yaml.len());
    assert!(yaml.len() <= MAX_MANIFEST_BYTES);
    let manifest = check_ok(&yaml);
    assert_eq!(manifest.components.len(), MAX_COMPONENTS);
}

#[test]
fn manifests_have_at_most_500_components() {
    let mut yaml = String::from("config-version: 0.1\ncomponents:\n");
    for idx in 0..=MAX_COMPONENTS {
        padded_component(&mut yaml, &format!("c{idx}"), 0);
    }
    check_err(
        &yaml,
        &["2:1: field `components`: declares 501 components; at most 500 are allowed"],
    );
}

#[test]
fn nesting_is_at_most_32_deep() {
    // The document is level 1, `components` 2, a component 3, `run` 4, `env` 5.
    let deep = |depth: usize| {
        format!(
            "config-version: 0.1\ncomponents:\n  web:\n    type: continuous\n    \
             build: {{image: nginx}}\n    run:\n      env:\n        A: {}1{}\n",
            "[".repeat(depth - 5),
            "]".repeat(depth - 5)
        )
    };
    // At 32 levels the problem is the type of `A`, not the depth.
    check_err(
        &deep(MAX_DEPTH),
        &["8:12: component `web`, field `run.env.A`: expected a string, found a sequence"],
    );
    check_err(
        &deep(MAX_DEPTH + 1),
        &["8:39: component `web`: nesting is deeper than 32 levels"],
    );
}

/// Parses `yaml`, which must fail because of its aliases, and fast.
#[track_caller]
fn check_alias_bomb(yaml: &str, expected: &str) {
    let started = Instant::now();
    let result = Manifest::parse(yaml);
    let elapsed = started.elapsed();
    // A safety bound, far above the few milliseconds this takes.
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    let errors = result.expect_err("an alias bomb");
    assert_eq!(errors.to_string(), expected);
}

#[test]
fn a_billion_laughs_fails_fast() {
    let mut yaml = String::from(
        "config-version: 0.1\nlol0: &lol0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for level in 1..10 {
        let previous = format!("*lol{}", level - 1);
        let items = [previous.as_str(); 9].join(", ");
        let _ = writeln!(yaml, "lol{level}: &lol{level} [{items}]");
    }
    yaml.push_str(
        "components:\n  web:\n    type: continuous\n    build: {image: nginx}\n    \
         wait-for: *lol9\n",
    );
    check_alias_bomb(
        &yaml,
        "5:42: aliases expand to more than 5000 YAML events; the alias expansion budget is small",
    );
}

#[test]
fn a_wide_alias_fan_out_fails_fast() {
    // About 6.5 KB: one anchor of 1,600 leaves, used 1,000 times, would be 1.6
    // million nodes.
    let leaves = vec!["x"; 1_600].join(",");
    let aliases = vec!["*a"; 1_000].join(",");
    let yaml = format!(
        "config-version: 0.1\nleaves: &a [{leaves}]\ncomponents:\n  web:\n    \
         type: continuous\n    build: {{image: nginx}}\n    wait-for: [{aliases}]\n"
    );
    assert!((6_000..7_000).contains(&yaml.len()), "{}", yaml.len());
    check_alias_bomb(
        &yaml,
        "7:25: component `web`: aliases expand to more than 5000 YAML events; \
         the alias expansion budget is small",
    );
}
