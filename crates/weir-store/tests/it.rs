//! The store conformance suite: every test runs against SQLite (a real database file) and
//! against PostgreSQL (a fresh database in the server `WEIR_TEST_PG` names; `scripts/test`
//! starts one). The scale-out tests (run ownership, the task queue) are PostgreSQL's only.

use weir_core::run::{Event, Lock, Phase, Submission};
use weir_store::{
    Acquire, AuditEntry, Durability, Error, LabelReq, LineageEdge, NewTask, Offer, Reaped,
    RunQuery, Since, Store, TaskUpdate, TokenRecord,
};

/// One database of the backend under test; `open` gives another connection to it.
struct Db {
    location: String,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    fn open(&self) -> Store {
        Store::open(std::path::Path::new(&self.location), Durability::Process).unwrap()
    }
}

fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    Db {
        location: dir.path().join("weir.db").display().to_string(),
        _dir: Some(dir),
    }
}

/// A new database on the PostgreSQL server of `WEIR_TEST_PG`; `None` (the test is skipped
/// with a note) where there is none, except under CI, where that is a failure.
fn postgres() -> Option<Db> {
    let Ok(base) = std::env::var("WEIR_TEST_PG") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "WEIR_TEST_PG is not set: run the tests with `bash scripts/test`, which starts PostgreSQL"
        );
        eprintln!("note: WEIR_TEST_PG is not set; the PostgreSQL variant is skipped");
        return None;
    };
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "weir_store_{}_{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let mut admin = postgres_admin(&base);
    // one statement each: CREATE DATABASE cannot run in a transaction
    for sql in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin.batch_execute(&sql).unwrap();
    }
    let (prefix, _) = base.rsplit_once('/').unwrap();
    Some(Db {
        location: format!("{prefix}/{name}"),
        _dir: None,
    })
}

fn postgres_admin(url: &str) -> ::postgres::Client {
    ::postgres::Client::connect(url, ::postgres::NoTls).unwrap()
}

/// Each test twice: `sqlite::NAME` and `postgres::NAME`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(&super::sqlite()); } )*
        }
        mod postgres {
            $( #[test] fn $name() { if let Some(db) = super::postgres() { super::$name(&db); } } )*
        }
    };
}

conformance!(
    runs_are_stored_as_their_events_and_found_by_name,
    controls_reach_the_driver_once,
    memoized_outputs_age_and_go,
    locks_are_granted_in_order_all_at_once_and_given_back,
    metrics_and_expiry,
    names_are_unique_per_namespace,
    runs_of_schema_10_keep_their_names,
    tokens_and_the_audit_log,
    templates_keep_every_version,
    lineage_links_runs_through_digests,
    listings_filter_by_namespace_phase_labels_and_page,
    a_newer_schema_is_refused,
);

/// Tests of the scale-out tables, PostgreSQL only.
macro_rules! postgres_only {
    ($($name:ident),* $(,)?) => {
        mod postgres_only {
            $( #[test] fn $name() { if let Some(db) = super::postgres() { super::$name(&db); } } )*
        }
    };
}

postgres_only!(
    a_run_has_one_owner_and_a_taken_over_driver_is_fenced,
    tasks_are_claimed_once_and_a_late_result_is_refused,
    claims_honour_selectors_resources_quotas_and_priority,
    a_change_committed_after_a_later_one_is_not_skipped,
    a_queue_of_schema_9_keeps_its_unrecorded_changes_when_migrated,
);

fn submission(name: &str, ns: &str, created_at: i64, labels: &[(&str, &str)]) -> Submission {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    serde_json::from_value(serde_json::json!({
        "name": name, "uid": format!("uid-{name}"), "namespace": ns, "created_at": created_at,
        "workflow": {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
            "metadata": {"name": name, "labels": labels},
            "spec": {"entrypoint": "main", "templates": [{"name": "main", "container": {"image": "x"}}]}},
    }))
    .unwrap()
}

fn runs_are_stored_as_their_events_and_found_by_name(db: &Db) {
    let mut s = db.open();
    s.create_run(&mut submission("train-abc", "ml", 10, &[]))
        .unwrap();
    s.create_run(&mut submission("train-abd", "ml", 20, &[]))
        .unwrap();
    assert!(matches!(
        s.create_run(&mut submission("train-abc", "ml", 30, &[])),
        Err(Error::RunExists(n)) if n == "train-abc"
    ));
    let evs = vec![
        (
            11,
            Event::Started {
                node: "n1".into(),
                pid: 7,
            },
        ),
        (12, Event::Stop),
        (13, Event::Suspend),
    ];
    s.append("train-abc", &evs[..2], Phase::Running, "", None)
        .unwrap();
    s.append("train-abc", &evs[2..], Phase::Failed, "stopped", Some(14))
        .unwrap();
    // another connection sees the whole log, in order
    let other = db.open();
    let rec = other.load("train-abc").unwrap();
    assert_eq!(rec.events, evs);
    assert_eq!(rec.summary.phase, "Failed");
    assert_eq!(rec.summary.message, "stopped");
    assert_eq!(rec.summary.finished_at, Some(14));
    assert_eq!(rec.submission.name, "train-abc");
    assert_eq!(
        other
            .events_since("train-abc", 1)
            .unwrap()
            .iter()
            .map(|e| e.0)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(other.resolve("@latest").unwrap(), "train-abd");
    assert_eq!(other.resolve("train-abc").unwrap(), "train-abc");
    assert_eq!(other.resolve("train-abd").unwrap(), "train-abd");
    assert!(matches!(
        other.resolve("train-ab"),
        Err(Error::Ambiguous(..))
    ));
    assert!(matches!(other.resolve("nope"), Err(Error::RunNotFound(_))));
    let names = |v: Vec<weir_store::RunSummary>| v.into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(
        names(other.list(&[], 10).unwrap()),
        ["train-abd", "train-abc"]
    );
    assert_eq!(
        names(other.list(&["failed".into()], 10).unwrap()),
        ["train-abc"]
    );
    assert_eq!(other.unfinished().unwrap(), ["train-abd"]);
    s.delete("train-abc").unwrap();
    assert!(matches!(
        other.load("train-abc"),
        Err(Error::RunNotFound(_))
    ));
    assert!(matches!(s.delete("train-abc"), Err(Error::RunNotFound(_))));
    assert!(matches!(
        s.append("train-abc", &evs, Phase::Running, "", None),
        Err(Error::RunNotFound(_))
    ));
}

fn controls_reach_the_driver_once(db: &Db) {
    let mut s = db.open();
    s.create_run(&mut submission("r", "ns", 1, &[])).unwrap();
    assert!(!s.has_controls("r").unwrap());
    let mut other = db.open();
    other.push_control("r", &Event::Suspend).unwrap();
    other.push_control("r", &Event::Terminate).unwrap();
    assert!(s.has_controls("r").unwrap());
    assert_eq!(
        s.take_controls("r").unwrap(),
        [Event::Suspend, Event::Terminate]
    );
    assert!(s.take_controls("r").unwrap().is_empty());
}

fn memoized_outputs_age_and_go(db: &Db) {
    let mut s = db.open();
    s.memo_put("c", "k1", "{\"a\":1}", 1000, "r1").unwrap();
    s.memo_put("c", "k2", "{}", 1000, "r1").unwrap();
    assert_eq!(
        s.memo_entry("c", "k1", Some(500), 1400).unwrap(),
        Some(("{\"a\":1}".into(), "r1".into()))
    );
    assert_eq!(s.memo_entry("c", "k1", Some(500), 1600).unwrap(), None);
    // a later run's outputs replace the entry
    s.memo_put("c", "k1", "{\"a\":2}", 2000, "r2").unwrap();
    assert_eq!(
        s.memo_entry("c", "k1", None, 9999).unwrap(),
        Some(("{\"a\":2}".into(), "r2".into()))
    );
    assert_eq!(s.memo_list().unwrap().len(), 2);
    assert_eq!(s.memo_delete("c", Some("k1")).unwrap(), 1);
    assert_eq!(s.memo_delete("c", None).unwrap(), 1);
    assert!(s.memo_list().unwrap().is_empty());
}

fn names_are_unique_per_namespace(db: &Db) {
    let mut s = db.open();
    let mut a = submission("train", "a", 1, &[]);
    s.create_run(&mut a).unwrap();
    assert_eq!(a.key(), "train");
    // another namespace's run of the same name is kept apart, under its own key
    let mut b = submission("train", "b", 2, &[]);
    s.create_run(&mut b).unwrap();
    assert_eq!(b.key(), "b~train");
    assert!(matches!(
        s.create_run(&mut submission("train", "b", 3, &[])),
        Err(Error::RunExists(n)) if n == "train"
    ));
    assert!(matches!(
        s.create_run(&mut submission("train", "a", 3, &[])),
        Err(Error::RunExists(_))
    ));
    assert_eq!(s.run_key("a", "train").unwrap().as_deref(), Some("train"));
    assert_eq!(s.run_key("b", "train").unwrap().as_deref(), Some("b~train"));
    // each is loaded, listed and deleted as itself, under its own name
    let rec = s.load("b~train").unwrap();
    assert_eq!(rec.submission.key(), "b~train");
    assert_eq!(
        (rec.summary.name.as_str(), rec.summary.namespace.as_str()),
        ("train", "b")
    );
    let listed: Vec<(String, String, String)> = s
        .list(&[], 10)
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.namespace, r.name))
        .collect();
    assert_eq!(
        listed,
        [
            ("b~train".into(), "b".into(), "train".into()),
            ("train".into(), "a".into(), "train".into())
        ]
    );
    // the CLI's argument: NAMESPACE/NAME, the key, or a name that is then ambiguous
    assert_eq!(s.resolve("b/train").unwrap(), "b~train");
    assert_eq!(s.resolve("b~train").unwrap(), "b~train");
    assert_eq!(s.resolve("train").unwrap(), "train");
    assert!(matches!(s.resolve("trai"), Err(Error::Ambiguous(..))));
    s.delete("train").unwrap();
    assert_eq!(s.resolve("trai").unwrap(), "b~train");
    // the name is free again in `a`, and its key is the name once more
    let mut again = submission("train", "a", 4, &[]);
    s.create_run(&mut again).unwrap();
    assert_eq!(again.key(), "train");
}

fn metrics_and_expiry(db: &Db) {
    let mut s = db.open();
    s.create_run(&mut submission("r1", "ns", 1, &[])).unwrap();
    s.create_run(&mut submission("r2", "other", 2, &[]))
        .unwrap();
    assert_eq!(s.run_key("other", "r2").unwrap().as_deref(), Some("r2"));
    assert_eq!(s.run_key("ns", "r2").unwrap(), None);
    assert_eq!(s.run_key("ns", "nope").unwrap(), None);
    // names become paths: the store refuses what is not a DNS-1123 name
    for bad in ["../x", "/abs", "objects", "A"] {
        assert!(
            matches!(
                s.create_run(&mut submission(bad, "ns", 3, &[])),
                Err(Error::InvalidName(_))
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        s.create_run(&mut submission("ok", "Bad.NS", 3, &[])),
        Err(Error::InvalidName(_))
    ));
    let m = weir_core::run::Metric {
        name: "loss".into(),
        help: "h".into(),
        kind: "gauge".into(),
        labels: vec![],
        value: 0.5,
        buckets: vec![],
        node: None,
    };
    s.record_metric("r1", &m, 5).unwrap();
    s.record_metric("r2", &m, 3).unwrap();
    let got: Vec<_> = s
        .metrics()
        .unwrap()
        .into_iter()
        .map(|(r, at, _)| (r, at))
        .collect();
    assert_eq!(got, [("r2".to_string(), 3), ("r1".to_string(), 5)]);
    let of = |ns: &str| -> Vec<String> {
        s.metrics_in(ns)
            .unwrap()
            .into_iter()
            .map(|(r, _, _)| r)
            .collect()
    };
    assert_eq!(of("other"), ["r2"]);
    assert_eq!(of("ns"), ["r1"]);
    assert!(of("none").is_empty());
    s.set_expiry("r1", 100).unwrap();
    assert!(s.expired(99).unwrap().is_empty());
    assert_eq!(s.expired(100).unwrap(), ["r1"]);
}

fn tokens_and_the_audit_log(db: &Db) {
    let mut s = db.open();
    let t = TokenRecord {
        id: "abc".into(),
        namespace: "ml".into(),
        role: "editor".into(),
        hash: "h".into(),
        description: "ci".into(),
        created_at: 5,
        expires_at: Some(50),
        revoked_at: None,
    };
    s.create_token(&t).unwrap();
    s.create_token(&TokenRecord {
        id: "def".into(),
        namespace: "*".into(),
        created_at: 6,
        expires_at: None,
        ..t.clone()
    })
    .unwrap();
    assert_eq!(s.token("abc").unwrap(), Some(t.clone()));
    assert_eq!(s.tokens(Some("ml")).unwrap(), std::slice::from_ref(&t));
    assert_eq!(s.tokens(None).unwrap().len(), 2);
    assert!(s.revoke_token("abc", 9).unwrap());
    assert!(!s.revoke_token("abc", 10).unwrap());
    assert_eq!(s.token("abc").unwrap().unwrap().revoked_at, Some(9));
    for (i, ns) in ["ml", "web", "ml"].iter().enumerate() {
        s.record_audit(&AuditEntry {
            id: 0,
            at: i as i64,
            actor: "token:abc".into(),
            namespace: ns.to_string(),
            action: "POST /x".into(),
            target: format!("t{i}"),
            status: 200,
        })
        .unwrap();
    }
    let ml = s.audit(Some("ml"), None, 10).unwrap();
    assert_eq!(
        ml.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
        ["t2", "t0"]
    );
    let page = s.audit(None, Some(ml[0].id), 1).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].target, "t1");
    assert_eq!(page[0].status, 200);
}

fn templates_keep_every_version(db: &Db) {
    let mut s = db.open();
    assert_eq!(
        s.put_template("WorkflowTemplate", "ml", "t", "v1", 1)
            .unwrap(),
        1
    );
    assert_eq!(
        s.put_template("WorkflowTemplate", "ml", "t", "v2", 2)
            .unwrap(),
        2
    );
    assert_eq!(
        s.put_template("WorkflowTemplate", "ml", "u", "u1", 3)
            .unwrap(),
        1
    );
    assert_eq!(
        s.template("WorkflowTemplate", "ml", "t", None)
            .unwrap()
            .unwrap()
            .body,
        "v2"
    );
    assert_eq!(
        s.template("WorkflowTemplate", "ml", "t", Some(1))
            .unwrap()
            .unwrap()
            .body,
        "v1"
    );
    assert!(s.delete_template("WorkflowTemplate", "ml", "t", 4).unwrap());
    assert!(!s.delete_template("WorkflowTemplate", "ml", "t", 5).unwrap());
    assert!(
        s.template("WorkflowTemplate", "ml", "t", None)
            .unwrap()
            .is_none()
    );
    let live: Vec<_> = s
        .templates("WorkflowTemplate", "ml")
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(live, ["u"]);
    let versions: Vec<_> = s
        .template_versions("WorkflowTemplate", "ml", "t")
        .unwrap()
        .into_iter()
        .map(|t| (t.version, t.deleted))
        .collect();
    assert_eq!(versions, [(3, true), (2, false), (1, false)]);
}

fn lineage_links_runs_through_digests(db: &Db) {
    let mut s = db.open();
    s.create_run(&mut submission("a", "ml", 1, &[])).unwrap();
    s.create_run(&mut submission("b", "web", 2, &[])).unwrap();
    let edge = |run: &str, dir: &str, key: &str| LineageEdge {
        run: run.into(),
        node: format!("{run}-n"),
        node_name: "n".into(),
        template: "t".into(),
        params: "[]".into(),
        direction: dir.into(),
        artifact: "model".into(),
        digest: "0123456789abcdef".into(),
        key: key.into(),
        url: None,
        at: 7,
    };
    s.record_lineage(&[edge("a", "out", "objects/0123")])
        .unwrap();
    // recording again (a replay) changes nothing
    s.record_lineage(&[edge("a", "out", "objects/0123")])
        .unwrap();
    s.record_lineage(&[edge("b", "in", "objects/0123")])
        .unwrap();
    assert_eq!(
        s.lineage_by_digest("01234567", "out", None).unwrap(),
        [edge("a", "out", "objects/0123")]
    );
    assert!(
        s.lineage_by_digest("01234567", "in", Some("ml"))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.lineage_by_digest("01234567", "in", Some("web"))
            .unwrap()
            .len(),
        1
    );
    assert_eq!(s.run_object_keys("a").unwrap(), ["objects/0123"]);
    assert!(s.object_referenced("objects/0123", "a").unwrap());
    s.delete("b").unwrap();
    assert!(!s.object_referenced("objects/0123", "a").unwrap());
    assert_eq!(s.lineage_of_node("a", "a-n", "out").unwrap().len(), 1);
}

fn listings_filter_by_namespace_phase_labels_and_page(db: &Db) {
    let mut s = db.open();
    for (i, (name, ns, labels)) in [
        ("p1", "ml", vec![("team", "a"), ("gpu", "yes")]),
        ("p2", "ml", vec![("team", "b")]),
        ("q1", "web", vec![]),
        ("p3", "ml", vec![("team", "a")]),
    ]
    .into_iter()
    .enumerate()
    {
        s.create_run(&mut submission(name, ns, 10 * (i as i64 + 1), &labels))
            .unwrap();
    }
    s.append("p2", &[], Phase::Succeeded, "", Some(99)).unwrap();
    let names = |q: RunQuery| {
        let (v, more) = s.query_runs(&q).unwrap();
        (v.into_iter().map(|r| r.name).collect::<Vec<_>>(), more)
    };
    let ml = |limit| RunQuery {
        namespace: Some("ml".into()),
        limit,
        ..Default::default()
    };
    assert_eq!(
        names(ml(10)),
        (vec!["p3".into(), "p2".into(), "p1".into()], false)
    );
    assert_eq!(names(ml(2)), (vec!["p3".into(), "p2".into()], true));
    assert_eq!(
        names(RunQuery { offset: 2, ..ml(2) }),
        (vec!["p1".into()], false)
    );
    let q = |labels: Vec<LabelReq>| names(RunQuery { labels, ..ml(10) }).0;
    assert_eq!(
        q(vec![LabelReq::Eq("team".into(), "a".into())]),
        ["p3", "p1"]
    );
    assert_eq!(q(vec![LabelReq::NotEq("team".into(), "a".into())]), ["p2"]);
    assert_eq!(q(vec![LabelReq::Exists("gpu".into())]), ["p1"]);
    assert_eq!(q(vec![LabelReq::Absent("gpu".into())]), ["p3", "p2"]);
    assert_eq!(
        names(RunQuery {
            phases: vec!["SUCCEEDED".into()],
            ..ml(10)
        })
        .0,
        ["p2"]
    );
    assert_eq!(
        names(RunQuery {
            name_prefix: Some("q".into()),
            limit: 10,
            ..Default::default()
        })
        .0,
        ["q1"]
    );
    assert_eq!(
        names(RunQuery {
            created_after: Some(20),
            created_before: Some(40),
            limit: 10,
            ..Default::default()
        })
        .0,
        ["q1", "p2"]
    );
    assert_eq!(
        s.count_by_phase().unwrap(),
        [("Running".to_string(), 3), ("Succeeded".to_string(), 1)]
    );
}

fn a_newer_schema_is_refused(db: &Db) {
    let s = db.open();
    let v = s.schema_version().unwrap();
    assert!(v >= 9, "schema version {v}");
    // migrating again applies nothing
    assert!(s.migrate().unwrap().is_empty());
    drop(s);
    if db.location.starts_with("postgres") {
        let mut c = postgres_admin(&db.location);
        c.execute("INSERT INTO weir_schema (version) VALUES ($1)", &[&(v + 1)])
            .unwrap();
    } else {
        rusqlite_set_version(&db.location, v + 1);
    }
    match Store::open(std::path::Path::new(&db.location), Durability::Process) {
        Err(Error::TooNew { found, .. }) => assert_eq!(found, v + 1),
        Err(e) => panic!("expected TooNew, got {e}"),
        Ok(_) => panic!("expected TooNew, opened"),
    }
}

/// A database of schema 10, when names were unique across namespaces, is migrated with each run
/// named as before in its namespace.
fn runs_of_schema_10_keep_their_names(db: &Db) {
    let mut s = db.open();
    s.create_run(&mut submission("old", "ns", 1, &[])).unwrap();
    drop(s);
    let undo = "DROP INDEX runs_local_name; ALTER TABLE runs DROP COLUMN local_name;";
    if db.location.starts_with("postgres") {
        let mut c = postgres_admin(&db.location);
        c.batch_execute(&format!(
            "{undo} ALTER TABLE tasks DROP COLUMN requeued; DELETE FROM weir_schema WHERE version >= 11;"
        ))
        .unwrap();
    } else {
        let out = std::process::Command::new("python3")
            .args(["-c", &format!("import sqlite3; c=sqlite3.connect({:?}); c.executescript({undo:?}); c.execute('PRAGMA user_version=10'); c.commit()", db.location)])
            .status()
            .unwrap();
        assert!(out.success());
    }
    let mut s = db.open();
    assert_eq!(s.schema_version().unwrap(), 12);
    assert_eq!(s.run_key("ns", "old").unwrap().as_deref(), Some("old"));
    assert!(matches!(
        s.create_run(&mut submission("old", "ns", 2, &[])),
        Err(Error::RunExists(_))
    ));
    let mut other = submission("old", "other", 3, &[]);
    s.create_run(&mut other).unwrap();
    assert_eq!(other.key(), "other~old");
}

fn rusqlite_set_version(path: &str, v: i64) {
    // the store's connection is private: set the version with Python's sqlite3
    let out = std::process::Command::new("python3")
        .args(["-c", &format!("import sqlite3; c=sqlite3.connect({path:?}); c.execute('PRAGMA user_version={v}'); c.commit()")])
        .status()
        .unwrap();
    assert!(out.success());
}

fn a_run_has_one_owner_and_a_taken_over_driver_is_fenced(db: &Db) {
    let mut s = db.open();
    s.create_run(&mut submission("r", "ns", 1, &[])).unwrap();
    let other = db.open();
    let e1 = s
        .claim_run("r", "server-a", 60_000)
        .unwrap()
        .expect("claimed");
    assert_eq!(other.claim_run("r", "server-b", 60_000).unwrap(), None);
    assert_eq!(other.run_owner("r").unwrap(), Some(("server-a".into(), e1)));
    assert!(
        other
            .claim_orphans("server-b", 60_000, 10)
            .unwrap()
            .is_empty()
    );
    s.append_fenced(
        "r",
        Some(e1),
        &[(1, Event::Suspend)],
        Phase::Running,
        "",
        None,
    )
    .unwrap();
    // server-a stops renewing: a short lease expires and server-b takes the run over
    assert_eq!(s.renew_held("server-a", &["r"], 1).unwrap(), 1);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let got = other.claim_orphans("server-b", 60_000, 10).unwrap();
    assert_eq!(got.len(), 1);
    let e2 = got[0].1;
    assert!(e2 > e1);
    // server-a's late append is refused, and nothing of it is stored
    assert!(matches!(
        s.append_fenced(
            "r",
            Some(e1),
            &[(2, Event::Stop)],
            Phase::Failed,
            "",
            Some(2)
        ),
        Err(Error::Fenced(_))
    ));
    let mut o = other;
    o.append_fenced(
        "r",
        Some(e2),
        &[(
            3,
            Event::Resume {
                parameters: vec![],
                selector: None,
            },
        )],
        Phase::Running,
        "",
        None,
    )
    .unwrap();
    assert_eq!(o.load("r").unwrap().events.len(), 2);
    // a lease nobody renews runs out: the run is nobody's
    assert_eq!(o.renew_held("server-b", &["r"], 1).unwrap(), 1);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(o.run_owner("r").unwrap(), None);
}

fn task(run: &str, node: &str, priority: i64, selector: &str, gpu: i64) -> NewTask {
    NewTask {
        run: run.into(),
        node: node.into(),
        namespace: "ns".into(),
        priority,
        spec: format!("{{\"node\":\"{node}\"}}"),
        selector: selector.into(),
        cpu_milli: 100,
        memory: 1 << 20,
        gpu,
    }
}

fn offer(max: usize) -> Offer {
    Offer {
        labels: Default::default(),
        cpu_milli: 8000,
        memory: 1 << 34,
        gpu: 0,
        max,
    }
}

fn tasks_are_claimed_once_and_a_late_result_is_refused(db: &Db) {
    let s = db.open();
    let tasks: Vec<_> = (0..20)
        .map(|i| task("r", &format!("n{i}"), 0, "{}", 0))
        .collect();
    s.enqueue(&tasks).unwrap();
    // queuing again after a restart changes nothing
    s.enqueue(&tasks[..5]).unwrap();
    // three workers claim at once from their own connections: every task exactly once
    let claimed: Vec<Vec<String>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..3)
            .map(|w| {
                sc.spawn(move || {
                    let c = db.open();
                    let mut mine = Vec::new();
                    loop {
                        let got = c.claim(&format!("w{w}"), &offer(3), 60_000).unwrap();
                        if got.is_empty() {
                            break mine;
                        }
                        mine.extend(got.into_iter().map(|t| t.node));
                    }
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<String> = claimed.concat();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 20, "{claimed:?}");
    assert_eq!(claimed.iter().map(Vec::len).sum::<usize>(), 20);

    // a worker holds n0 with a short lease, reports it started, then goes silent
    let mut s2 = db.open();
    // task updates go to the process that owns the run
    s2.create_run(&mut submission("r2", "ns", 1, &[])).unwrap();
    s2.claim_run("r2", "owner", 60_000).unwrap().unwrap();
    s2.enqueue(&[task("r2", "x", 0, "{}", 0)]).unwrap();
    let c = s2.claim("w-slow", &offer(1), 1).unwrap().remove(0);
    s2.mark_started(&[(c.id, c.epoch, Some(42))]).unwrap();
    // another process's run: nothing of it
    let (other, _) = s
        .task_updates(&["r2"], "someone else", Since::default())
        .unwrap();
    assert!(other.is_empty());
    let (got, since) = read_changes(&s, "r2", Since::default(), 1);
    assert_eq!(
        got,
        [(
            "r2".to_string(),
            TaskUpdate::Started {
                node: "x".into(),
                pid: Some(42)
            }
        )]
    );
    // read once from where the last read stopped; a new owner gets it all again
    let (again, since) = s.task_updates(&["r2"], "owner", since).unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(
        s.run_updates("r2", "owner").unwrap(),
        [TaskUpdate::Started {
            node: "x".into(),
            pid: Some(42)
        }]
    );
    // the worker's lease expires; the reaper deals with its task
    let reap = |what: Reaped| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let reaped = s
            .reap_expired(&|w| format!("{{\"error\":\"worker {w} lost\"}}"))
            .unwrap();
        assert_eq!(reaped, [("r2".to_string(), "x".to_string(), what)]);
    };
    // lost once: queued again, as the same attempt, for another worker
    reap(Reaped::Requeued);
    // the late result is refused
    assert_eq!(
        s2.complete(&[(c.id, c.epoch, "{\"late\":1}".into())])
            .unwrap(),
        [false]
    );
    let c2 = s2.claim("w-slow-2", &offer(1), 1).unwrap().remove(0);
    assert_eq!((c2.id, c2.node.as_str()), (c.id, "x"));
    assert!(c2.epoch > c.epoch);
    s2.mark_started(&[(c2.id, c2.epoch, Some(43))]).unwrap();
    // lost twice: settled with the lost-worker error
    reap(Reaped::Settled);
    // the late result is refused; the reaper's stands
    assert_eq!(
        s2.complete(&[(c2.id, c2.epoch, "{\"late\":2}".into())])
            .unwrap(),
        [false]
    );
    assert_eq!(
        read_changes(&s, "r2", since, 1).0,
        [(
            "r2".to_string(),
            TaskUpdate::Done {
                node: "x".into(),
                result: "{\"error\":\"worker w-slow-2 lost\"}".into(),
                logged: false,
            }
        )]
    );
    // a live worker's result is accepted once
    let live = s.claim("w-live", &offer(0), 60_000).unwrap();
    assert!(live.is_empty());
    s.enqueue(&[task("r3", "y", 0, "{}", 0)]).unwrap();
    let y = s.claim("w-live", &offer(1), 60_000).unwrap().remove(0);
    let held = s.heartbeat("w-live", "{}", "{}", 60_000).unwrap();
    assert_eq!(held, [(y.id, y.epoch, false)]);
    s.cancel_task("r3", "y", "{}").unwrap();
    assert_eq!(
        s.heartbeat("w-live", "{}", "{}", 60_000).unwrap(),
        [(y.id, y.epoch, true)]
    );
    assert_eq!(
        s.complete(&[(y.id, y.epoch, "{\"ok\":1}".into())]).unwrap(),
        [true]
    );
    assert_eq!(
        s.complete(&[(y.id, y.epoch, "{\"ok\":2}".into())]).unwrap(),
        [false]
    );
    s.ack_task_updates("r3", &["y"]).unwrap();
    assert!(!s.task_exists("r3", "y").unwrap());
    // a result reported with its log says so: the run's server fetches the log then only
    s2.create_run(&mut submission("r4", "ns", 1, &[])).unwrap();
    s2.claim_run("r4", "owner", 60_000).unwrap().unwrap();
    s2.enqueue(&[task("r4", "a", 0, "{}", 0), task("r4", "b", 0, "{}", 0)])
        .unwrap();
    let ab = s2.claim("w-live", &offer(2), 60_000).unwrap();
    let done: Vec<_> = ab
        .iter()
        .map(|t| (t.id, t.epoch, "{}".to_string()))
        .collect();
    let logs: Vec<_> = ab
        .iter()
        .map(|t| (t.node == "a").then_some(("r4", "a", "hello\n")))
        .collect();
    assert_eq!(s2.report(&[], &done, &logs).unwrap(), [true, true]);
    let (mut got, _) = read_changes(&s, "r4", Since::default(), 2);
    got.sort_by(|x, y| format!("{x:?}").cmp(&format!("{y:?}")));
    assert_eq!(
        got,
        [
            (
                "r4".to_string(),
                TaskUpdate::Done {
                    node: "a".into(),
                    result: "{}".into(),
                    logged: true,
                }
            ),
            (
                "r4".to_string(),
                TaskUpdate::Done {
                    node: "b".into(),
                    result: "{}".into(),
                    logged: false,
                }
            )
        ]
    );
    assert_eq!(s.task_log("r4", "a").unwrap().as_deref(), Some("hello\n"));
    assert_eq!(s.task_log("r4", "b").unwrap(), None);
}

fn claims_honour_selectors_resources_quotas_and_priority(db: &Db) {
    let s = db.open();
    s.enqueue(&[
        task("r", "low", 0, "{}", 0),
        task("r", "high", 5, "{}", 0),
        task("r", "gpu", 9, "{\"gpu\":\"true\"}", 1),
    ])
    .unwrap();
    // a worker without the label or a GPU gets the high-priority task first, never the GPU one
    let got: Vec<_> = s
        .claim("cpu", &offer(1), 60_000)
        .unwrap()
        .into_iter()
        .map(|t| t.node)
        .collect();
    assert_eq!(got, ["high"]);
    let mut gpu_offer = offer(5);
    gpu_offer.labels.insert("gpu".into(), "true".into());
    gpu_offer.gpu = 2;
    // a namespace quota of one GPU task at a time
    s.set_quota(&weir_store::Quota {
        namespace: "ns".into(),
        max_runs: None,
        max_tasks: None,
        max_gpu: Some(1),
    })
    .unwrap();
    s.enqueue(&[task("r", "gpu2", 9, "{\"gpu\":\"true\"}", 1)])
        .unwrap();
    let got: Vec<_> = s
        .claim("gpu-w", &gpu_offer, 60_000)
        .unwrap()
        .into_iter()
        .map(|t| t.node)
        .collect();
    assert_eq!(got, ["gpu", "low"]);
    assert_eq!(s.quota("ns").unwrap().unwrap().max_gpu, Some(1));
    let depth = s.queue_depth().unwrap();
    assert_eq!(
        depth,
        [("queued".to_string(), 1), ("running".to_string(), 3)]
    );
}

fn lock(key: &str, limit: Option<u32>) -> Lock {
    Lock {
        key: key.into(),
        limit,
    }
}

fn locks_are_granted_in_order_all_at_once_and_given_back(db: &Db) {
    // two connections, as two weir processes would have
    let mut a = db.open();
    let mut b = db.open();
    let m = [lock("ns/Mutex/m", Some(1))];
    assert_eq!(a.try_acquire("r1", "n1", &m, 0).unwrap(), Acquire::Acquired);
    // asking again while holding is harmless
    assert_eq!(a.try_acquire("r1", "n1", &m, 0).unwrap(), Acquire::Acquired);
    assert_eq!(
        b.try_acquire("r2", "n2", &m, 0).unwrap(),
        Acquire::Waiting("Waiting for ns/Mutex/m lock. Lock status: 1/1".into())
    );
    // a later request with a higher priority goes ahead of n2
    assert!(matches!(
        b.try_acquire("r3", "n3", &m, 5).unwrap(),
        Acquire::Waiting(_)
    ));
    a.release("n1").unwrap();
    assert!(matches!(
        b.try_acquire("r2", "n2", &m, 0).unwrap(),
        Acquire::Waiting(_)
    ));
    assert_eq!(b.try_acquire("r3", "n3", &m, 5).unwrap(), Acquire::Acquired);

    // all or nothing: n4 needs the mutex (held by n3) and a free semaphore; it takes neither
    let both = [
        lock("ns/Mutex/m", Some(1)),
        lock("ns/ConfigMap/c/k", Some(2)),
    ];
    assert!(matches!(
        a.try_acquire("r4", "n4", &both, 0).unwrap(),
        Acquire::Waiting(_)
    ));
    let holders: Vec<_> = a
        .sync_list()
        .unwrap()
        .into_iter()
        .map(|l| (l.key, l.holders, l.waiting))
        .collect();
    assert_eq!(
        holders,
        [
            ("ns/ConfigMap/c/k".into(), vec![], vec!["n4".to_string()]),
            (
                "ns/Mutex/m".into(),
                vec!["n3".to_string()],
                vec!["n2".to_string(), "n4".to_string()]
            ),
        ]
    );
    // a finished run gives back everything
    b.release_run("r3").unwrap();
    assert_eq!(b.try_acquire("r2", "n2", &m, 0).unwrap(), Acquire::Acquired);

    // a database semaphore needs a limit from the store
    let db = [lock("ns/Database/k", None)];
    assert!(
        matches!(a.try_acquire("r5", "n5", &db, 0).unwrap(), Acquire::Refused(m) if m.contains("weir sync limit ns/Database/k N"))
    );
    a.set_sync_limit("ns/Database/k", Some(1)).unwrap();
    assert_eq!(
        a.try_acquire("r5", "n5", &db, 0).unwrap(),
        Acquire::Acquired
    );
    assert!(matches!(
        b.try_acquire("r6", "n6", &db, 0).unwrap(),
        Acquire::Waiting(_)
    ));
    // a run that ends gives its place to the next one
    a.release_run("r5").unwrap();
    assert_eq!(
        b.try_acquire("r6", "n6", &db, 0).unwrap(),
        Acquire::Acquired
    );
}

/// Drivers read task changes from where their last read stopped, without marking anything: a
/// report that commits after a later-started one must still be read.
fn a_change_committed_after_a_later_one_is_not_skipped(db: &Db) {
    let mut s = db.open();
    s.create_run(&mut submission("r", "ns", 1, &[])).unwrap();
    s.claim_run("r", "owner", 60_000).unwrap().unwrap();
    s.enqueue(&[task("r", "slow", 0, "{}", 0), task("r", "fast", 0, "{}", 0)])
        .unwrap();
    let claimed = s.claim("w", &offer(2), 60_000).unwrap();
    let id = |n: &str| claimed.iter().find(|t| t.node == n).unwrap();
    // a worker's report stays open (its transaction began first)...
    let mut slow = postgres_admin(&db.location);
    let mut tx = slow.transaction().unwrap();
    tx.execute(
        "UPDATE tasks SET state = 'done', result = '{}', changed = pg_current_xact_id() WHERE id = $1",
        &[&id("slow").id],
    )
    .unwrap();
    // ...while another worker's report commits
    let f = id("fast");
    assert_eq!(s.complete(&[(f.id, f.epoch, "{}".into())]).unwrap(), [true]);
    let (first, since) = s.task_updates(&["r"], "owner", Since::default()).unwrap();
    assert!(first.is_empty(), "read past an open report: {first:?}");
    tx.commit().unwrap();
    let (mut then, since) = read_changes(&s, "r", since, 2);
    then.sort_by(|x, y| format!("{x:?}").cmp(&format!("{y:?}")));
    let nodes: Vec<_> = then
        .iter()
        .map(|(_, u)| match u {
            TaskUpdate::Done { node, .. } => node.as_str(),
            TaskUpdate::Started { node, .. } => panic!("{node} was not started"),
        })
        .collect();
    assert_eq!(nodes, ["fast", "slow"]);
    assert!(s.task_updates(&["r"], "owner", since).unwrap().0.is_empty());
}

/// Reads a run's task changes (of the run's owner, "owner") until `n` came or 10 s passed:
/// the transactions of other tests on the same server may hold reading back for a moment (the
/// horizon of what is read is the server's).
fn read_changes(
    s: &Store,
    run: &str,
    since: Since,
    n: usize,
) -> (Vec<(String, TaskUpdate)>, Since) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (mut got, mut at) = (Vec::new(), since);
    loop {
        let (more, next) = s.task_updates(&[run], "owner", at).unwrap();
        got.extend(more);
        at = next;
        if got.len() >= n || std::time::Instant::now() > deadline {
            return (got, at);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Schema 9 marked the changes drivers had read (`reported`); 10 stamps them with their
/// transaction. A database migrated with tasks in flight keeps every start and result not yet
/// recorded for the run's driver.
fn a_queue_of_schema_9_keeps_its_unrecorded_changes_when_migrated(db: &Db) {
    let mut s = db.open();
    s.create_run(&mut submission("r", "ns", 1, &[])).unwrap();
    s.claim_run("r", "owner", 60_000).unwrap().unwrap();
    drop(s);
    // the queue as schema 9 had it, with a result handed over but not recorded, a start, and a
    // queued task
    let mut raw = postgres_admin(&db.location);
    raw.batch_execute(
        "DROP INDEX tasks_changed;
         ALTER TABLE tasks DROP COLUMN changed;
         ALTER TABLE tasks ADD COLUMN reported BIGINT NOT NULL DEFAULT 0;
         CREATE INDEX tasks_unreported ON tasks(run, id)
             WHERE (state = 'running' AND pid IS NOT NULL AND reported = 0) OR (state = 'done' AND reported < 2);
         DROP INDEX runs_local_name;
         ALTER TABLE runs DROP COLUMN local_name;
         ALTER TABLE tasks DROP COLUMN requeued;
         DELETE FROM weir_schema WHERE version >= 10;
         INSERT INTO tasks (run, node, namespace, spec, state, pid, result, reported) VALUES
             ('r', 'finished', 'ns', '{}', 'done', 7, '{\"exit_code\":0}', 2),
             ('r', 'started', 'ns', '{}', 'running', 8, NULL, 1),
             ('r', 'waiting', 'ns', '{}', 'queued', NULL, NULL, 0);",
    )
    .unwrap();
    drop(raw);
    let s = db.open();
    assert_eq!(s.schema_version().unwrap(), 12);
    // 11 gave the run its name in its namespace
    assert_eq!(s.run_key("ns", "r").unwrap().as_deref(), Some("r"));
    assert_eq!(
        s.run_updates("r", "owner").unwrap(),
        [
            TaskUpdate::Done {
                node: "finished".into(),
                result: "{\"exit_code\":0}".into(),
                logged: false,
            },
            TaskUpdate::Started {
                node: "started".into(),
                pid: Some(8),
            },
        ]
    );
    let (read, _) = read_changes(&s, "r", Since::default(), 2);
    assert_eq!(read.len(), 2, "{read:?}");
}
