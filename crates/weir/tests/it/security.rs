//! The server probed as an attacker would: one test per finding of the security review, each
//! asserting the fixed behaviour through the real server and CLI.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{ApiServer, Sandbox, answer, http, token, wait_for};

/// POSTs `body` as `ctype` to `path` with `auth` (a token, or none); status and body.
fn send(srv: &ApiServer, path: &str, auth: Option<&str>, ctype: &str, body: &str) -> (u16, Value) {
    let mut req = http().post(srv.url(path)).content_type(ctype);
    if let Some(t) = auth {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    answer(req.send(body))
}

/// POSTs a YAML workflow to `ns`.
fn post(srv: &ApiServer, ns: &str, auth: Option<&str>, query: &str, yaml: &str) -> (u16, Value) {
    let path = format!("/api/v1/workflows/{ns}{query}");
    send(srv, &path, auth, "application/yaml", yaml)
}

fn get(srv: &ApiServer, path: &str, auth: Option<&str>) -> (u16, Value) {
    let mut req = http().get(srv.url(path));
    if let Some(t) = auth {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    answer(req.call())
}

fn echo(name: &str) -> String {
    format!(
        "kind: Workflow\nmetadata: {{name: {name}}}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    container: {{image: x, command: [echo, hi]}}\n"
    )
}

/// Follows `name` of `ns` until it ends; its final Workflow.
fn finished(srv: &ApiServer, ns: &str, name: &str, auth: Option<&str>) -> Value {
    let mut wf = Value::Null;
    wait_for(Duration::from_secs(60), || {
        wf = get(srv, &format!("/api/v1/workflows/{ns}/{name}"), auth).1;
        matches!(
            wf["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed" | "Error")
        )
    });
    wf
}

fn logs(srv: &ApiServer, ns: &str, name: &str, auth: Option<&str>) -> String {
    let mut req = http().get(srv.url(&format!("/api/v1/workflows/{ns}/{name}/log?follow=false")));
    if let Some(t) = auth {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    req.call().unwrap().body_mut().read_to_string().unwrap()
}

/// Finding 1: run names are paths. Every traversal, absolute, reserved, NUL and overlong name is
/// refused with 400 before anything is stored, and nothing outside the data directory changes.
#[test]
fn names_that_are_paths_are_refused_and_nothing_outside_the_data_directory_is_touched() {
    let sb = Sandbox::new();
    let editor = token(&sb, "a", "editor");
    // beside the data directory, removed when the test ends, passed or not
    let outside = tempfile::Builder::new()
        .prefix("victim-")
        .tempdir_in(sb.dir.parent().unwrap())
        .unwrap();
    let victim = outside.path().to_path_buf();
    std::fs::write(victim.join("keep"), "precious").unwrap();
    let srv = ApiServer::start(&sb, &[]);
    let vname = victim.file_name().unwrap().to_string_lossy().to_string();
    let long = "a".repeat(300);
    for query in [
        format!("?name=..%2F..%2F{vname}"),
        "?name=..".to_string(),
        format!("?name={}", victim.display()),
        "?name=objects".to_string(),
        "?name=a%00b".to_string(),
        format!("?name={long}"),
        "?name=Upper_Case".to_string(),
    ] {
        let (status, body) = post(&srv, "a", Some(&editor), &query, &echo("ok-name"));
        assert_eq!(status, 400, "{query}: {body}");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !msg.contains(&sb.dir.display().to_string()),
            "server paths shown: {msg}"
        );
    }
    for name in ["../../x", "/tmp/abs", "fetched"] {
        let (status, body) = post(&srv, "a", Some(&editor), "", &echo(&format!("'{name}'")));
        assert_eq!(status, 400, "{name}: {body}");
    }
    // DELETE through a traversal name finds nothing to delete
    let (status, _) = answer(
        http()
            .delete(srv.url(&format!("/api/v1/workflows/a/..%2F..%2F{vname}")))
            .header("Authorization", &format!("Bearer {editor}"))
            .call(),
    );
    assert!(status == 404 || status == 400, "{status}");
    // a key-only artifact key that leaves the repository fails its node, writes nothing
    let escape = format!(
        "kind: Workflow\nmetadata: {{name: keys}}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    container: {{image: x, command: [sh, -c, 'echo x > /tmp/o']}}\n    outputs:\n      artifacts: [{{name: o, path: /tmp/o, archive: {{none: {{}}}}, s3: {{key: '../../../{vname}/planted'}}}}]\n"
    );
    let (status, body) = post(&srv, "a", Some(&editor), "", &escape);
    assert_eq!(status, 200, "{body}");
    let wf = finished(&srv, "a", "keys", Some(&editor));
    assert_ne!(wf["status"]["phase"], "Succeeded", "{wf}");
    assert!(wf.to_string().contains("leaves its directory"), "{wf}");
    // nothing outside the data directory was touched, and the database still answers
    let names: Vec<String> = std::fs::read_dir(&victim)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["keep".to_string()]);
    assert_eq!(
        std::fs::read_to_string(victim.join("keep")).unwrap(),
        "precious"
    );
    assert_eq!(get(&srv, "/api/v1/workflows/a", Some(&editor)).0, 200);
}

/// The bombs of finding 3, each a small file.
fn bombs() -> Vec<(&'static str, String)> {
    let wf = |templates: &str| {
        format!(
            "kind: Workflow\nmetadata: {{generateName: bomb-}}\nspec:\n  entrypoint: a\n  templates:\n{templates}"
        )
    };
    let mut alias = String::from("kind: Workflow\nmetadata: {generateName: bomb-}\n");
    alias.push_str("x1: &a1 [x,x,x,x,x,x,x,x,x,x]\n");
    for i in 2..=7 {
        let p = i - 1;
        alias.push_str(&format!(
            "x{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"
        ));
    }
    alias.push_str("spec:\n  entrypoint: a\n  templates:\n  - name: a\n    container: {image: x, command: [echo]}\n");
    vec![
        (
            "recursion",
            wf("  - name: a\n    steps:\n    - - {name: x, template: a}\n"),
        ),
        ("aliases", alias),
        (
            "sequence",
            wf(
                "  - name: a\n    steps:\n    - - {name: x, template: b, withSequence: {count: '1000000000'}}\n  - name: b\n    container: {image: x, command: [echo]}\n",
            ),
        ),
        (
            "repeat",
            wf(
                "  - name: a\n    container: {image: x, command: [echo, '{{=sprig.repeat(1000000, sprig.repeat(1000000, \"x\"))}}']}\n",
            ),
        ),
        (
            "range",
            wf(
                "  - name: a\n    container: {image: x, command: [echo, '{{=len(1..1000000000)}}']}\n",
            ),
        ),
        (
            "fan-out",
            wf(
                "  - name: a\n    steps:\n    - - {name: x, template: b, withParam: '{{=toJson(1..1000000)}}'}\n  - name: b\n    container: {image: x, command: [echo]}\n",
            ),
        ),
    ]
}

/// Finding 3: each bomb is a validation error (400 from the server, exit 2 from `weir lint`),
/// the server keeps answering, and nothing is stored.
#[test]
fn expansion_bombs_are_validation_errors_and_the_server_keeps_answering() {
    let sb = Sandbox::new();
    let srv = ApiServer::start(&sb, &["--insecure-local"]);
    for (what, yaml) in bombs() {
        let t = Instant::now();
        let (status, body) = post(&srv, "default", None, "", &yaml);
        let took = t.elapsed();
        assert_eq!(status, 400, "{what}: {body}");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("exceeds the limit") || msg.contains("Maximum recursion depth"),
            "{what}: {msg}"
        );
        println!("{what}: 400 in {took:?}");
        let text = srv.text("/healthz");
        assert_eq!(text, "ok\n");
        let file = sb.write(&format!("{what}.yaml"), &yaml);
        let out = sb.weir(&["lint", file.to_str().unwrap()]);
        assert_eq!(out.code, 2, "{what}: {}", out.all());
        assert!(out.stderr.contains("exceeds the limit") || out.stderr.contains("recursion"));
    }
    let (_, list) = get(&srv, "/api/v1/workflows/default", None);
    assert_eq!(list["items"], json!([]), "nothing was stored");
}

/// Finding 3, at startup: a database holding runs that cannot go on (one whose loop is past the
/// limits, written before they existed; one whose stored submission is not even JSON) starts,
/// marks them Failed/Error with the reason, and serves.
#[test]
fn a_database_holding_bombs_starts_and_marks_them_errored() {
    let sb = Sandbox::new();
    // a run created normally, then its stored submission replaced behind weir's back
    let ok = sb.write("ok.yaml", &echo("victim"));
    assert_eq!(
        sb.weir(&["run", ok.to_str().unwrap(), "--name", "bomb"])
            .code,
        0
    );
    assert_eq!(
        sb.weir(&["run", ok.to_str().unwrap(), "--name", "garbage"])
            .code,
        0
    );
    let seq = r#"{"kind":"Workflow","metadata":{"name":"bomb"},"spec":{"entrypoint":"a","templates":[{"name":"a","steps":[[{"name":"x","template":"b","withSequence":{"count":"1000000000"}}]]},{"name":"b","container":{"image":"x","command":["echo"]}}]}}"#;
    let script = r#"
import json, sqlite3, sys
c = sqlite3.connect(sys.argv[1])
sub = json.loads(c.execute("SELECT submission FROM runs WHERE name='bomb'").fetchone()[0])
sub["workflow"] = json.loads(sys.argv[2])
c.execute("UPDATE runs SET submission=?, phase='Running', finished_at=NULL WHERE name='bomb'", (json.dumps(sub),))
c.execute("DELETE FROM events WHERE run='bomb'")
c.execute("UPDATE runs SET submission='{not json', phase='Running', finished_at=NULL WHERE name='garbage'")
c.commit()
"#;
    let st = std::process::Command::new("python3")
        .args(["-c", script, sb.db.to_str().unwrap(), seq])
        .status()
        .unwrap();
    assert!(st.success());
    let srv = ApiServer::start(&sb, &["--insecure-local"]);
    assert_eq!(srv.text("/healthz"), "ok\n");
    let summary = |name: &str| {
        let mut phase = String::new();
        wait_for(Duration::from_secs(30), || {
            let out = sb.weir(&["list", "-o", "json"]);
            let v: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
            phase = v
                .as_array()
                .and_then(|a| a.iter().find(|r| r["name"] == name))
                .map(|r| format!("{} {}", r["phase"], r["message"]))
                .unwrap_or_default();
            phase.contains("Error")
        });
        phase
    };
    let bomb = summary("bomb");
    assert!(
        bomb.contains("cannot be loaded") && bomb.contains("exceeds the limit"),
        "{bomb}"
    );
    let garbage = summary("garbage");
    assert!(garbage.contains("cannot be loaded"), "{garbage}");
    assert_eq!(srv.text("/healthz"), "ok\n");
    // and such runs can be deleted
    for name in ["bomb", "garbage"] {
        let (status, body) = answer(
            http()
                .delete(srv.url(&format!("/api/v1/workflows/default/{name}")))
                .call(),
        );
        assert_eq!(status, 200, "{name}: {body}");
    }
}

/// Finding 2: a local-executor task of `weir server` runs as an unprivileged user that cannot
/// read the server's database, mint a token, enter the server's namespaces or read a host file
/// through an output path or a hostPath volume.
#[test]
fn a_task_cannot_read_the_database_mint_a_token_or_read_host_files() {
    let sb = Sandbox::new();
    let editor = token(&sb, "a", "editor");
    let admin = token(&sb, "*", "admin");
    // a data directory others may enter: the server closes it to all but its own user
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sb.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let srv = ApiServer::start(&sb, &[]);
    let weir = env!("CARGO_BIN_EXE_weir");
    let db = sb.db.display();
    let attack = format!(
        "kind: Workflow\nmetadata: {{name: attack}}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    script:\n      image: x\n      command: [sh]\n      source: |\n        id -u\n        head -c 16 {db} && echo READ-DB\n        test -e {db} && echo SEES-DB\n        ls {dir}/runs && echo LISTED-RUNS\n        {weir} --db {db} token create -n '*' --role admin && echo MINTED\n        nsenter -t 1 -m true && echo ENTERED\n        cat /proc/1/environ && echo ENVIRON\n        exit 0\n",
        dir = sb.dir.display()
    );
    let (status, body) = post(&srv, "a", Some(&editor), "", &attack);
    assert_eq!(status, 200, "{body}");
    let wf = finished(&srv, "a", "attack", Some(&editor));
    assert_eq!(wf["status"]["phase"], "Succeeded", "{wf}");
    let log = logs(&srv, "a", "attack", Some(&editor));
    let uid = log
        .lines()
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_default()
        .trim()
        .to_string();
    assert!(
        uid != "0" && !uid.is_empty(),
        "the task ran as uid {uid}: {log}"
    );
    for mark in [
        "READ-DB",
        "SEES-DB",
        "LISTED-RUNS",
        "MINTED",
        "ENTERED",
        "ENVIRON",
    ] {
        assert!(!log.contains(mark), "{mark}: {log}");
    }
    let mode = std::fs::metadata(&sb.dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{mode:o}");
    // still exactly the two tokens the test made
    let (status, toks) = get(&srv, "/api/v1/tokens/a", Some(&admin));
    assert_eq!(status, 200, "{toks}");
    let out = sb.weir(&["token", "list"]);
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);
    // a host file through an output path, or through a hostPath volume
    let shadow = "kind: Workflow\nmetadata: {name: shadow}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    container: {image: x, command: [true]}\n    outputs:\n      parameters: [{name: s, valueFrom: {path: /etc/shadow}}]\n";
    let (status, body) = post(&srv, "a", Some(&editor), "", shadow);
    assert_eq!(status, 200, "{body}");
    let wf = finished(&srv, "a", "shadow", Some(&editor));
    assert_ne!(wf["status"]["phase"], "Succeeded", "{wf}");
    assert!(!wf.to_string().contains("root:"), "{wf}");
    // a symlink the task leaves at an output path, or inside an output directory, is not
    // followed to the host file it names
    let param = "kind: Workflow\nmetadata: {name: link-param}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    container: {image: x, command: [ln, -s, /etc/shadow, /tmp/p]}\n    outputs:\n      parameters: [{name: p, valueFrom: {path: /tmp/p}}]\n";
    assert_eq!(post(&srv, "a", Some(&editor), "", param).0, 200);
    let wf = finished(&srv, "a", "link-param", Some(&editor));
    assert_ne!(wf["status"]["phase"], "Succeeded", "{wf}");
    assert!(wf.to_string().contains("outside the task's files"), "{wf}");
    let dir = "kind: Workflow\nmetadata: {name: link-dir}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    container: {image: x, command: [sh, -c, 'mkdir /tmp/d && echo ok > /tmp/d/f && ln -s /etc/shadow /tmp/d/s && ln -s /etc /tmp/d/etc']}\n    outputs:\n      artifacts: [{name: d, path: /tmp/d, archive: {none: {}}, s3: {key: link-dir/d}}]\n";
    assert_eq!(post(&srv, "a", Some(&editor), "", dir).0, 200);
    let wf = finished(&srv, "a", "link-dir", Some(&editor));
    assert_eq!(wf["status"]["phase"], "Succeeded", "{wf}");
    let stored = sb.dir.join("artifacts/link-dir/d");
    assert!(stored.join("f").is_file());
    assert!(!stored.join("s").exists() && !stored.join("etc").exists());
    let host = "kind: Workflow\nmetadata: {name: hostpath}\nspec:\n  entrypoint: m\n  volumes: [{name: etc, hostPath: {path: /etc}}]\n  templates:\n  - name: m\n    container: {image: x, command: [cat, /host/shadow], volumeMounts: [{name: etc, mountPath: /host}]}\n";
    let (status, body) = post(&srv, "a", Some(&editor), "", host);
    assert_eq!(status, 200, "{body}");
    let wf = finished(&srv, "a", "hostpath", Some(&editor));
    assert_ne!(wf["status"]["phase"], "Succeeded", "{wf}");
    assert!(wf.to_string().contains("--allow-host-path"), "{wf}");
}

/// Finding 2: a server started as root refuses to run tasks as root unless told.
#[test]
fn tasks_as_root_need_an_explicit_flag() {
    let sb = Sandbox::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("note: not root; a server not started as root cannot run tasks as root");
        return;
    }
    let out = sb.weir(&["server", "--task-user", "root", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("--allow-root-tasks"), "{}", out.stderr);
}

/// Finding 4: 96 concurrent requests with a real token id and wrong secrets. New tokens are
/// hashed with blake3; this one is a token made by an earlier weir, whose row holds an argon2
/// hash (the costly case): argon2 runs a few at a time, so the server's peak memory stays small,
/// and it goes on answering.
#[test]
fn concurrent_wrong_secrets_keep_the_servers_memory_bounded() {
    use argon2::password_hash::PasswordHasher;
    let sb = Sandbox::new();
    let real = token(&sb, "a", "viewer");
    let id = real.split('_').nth(1).unwrap().to_string();
    let secret = &real[18..];
    let hash = argon2::Argon2::default()
        .hash_password_with_salt(secret.as_bytes(), &[9; 16])
        .unwrap()
        .to_string();
    let script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nassert c.execute('UPDATE tokens SET hash=? WHERE id=?', (sys.argv[2], sys.argv[3])).rowcount == 1\nc.commit()\n";
    let st = std::process::Command::new("python3")
        .args(["-c", script, sb.db.to_str().unwrap(), &hash, &id])
        .status()
        .unwrap();
    assert!(st.success());
    let srv = ApiServer::start(&sb, &[]);
    // the real token, used once before: its verified secret is remembered
    assert_eq!(get(&srv, "/api/v1/workflows/a", Some(&real)).0, 200);
    let url = srv.url("/api/v1/workflows/a");
    let handles: Vec<_> = (0..96)
        .map(|i| {
            let url = url.clone();
            let wrong = format!("weir_{id}_{:0>43}", i);
            std::thread::spawn(move || {
                answer(
                    http()
                        .get(&url)
                        .header("Authorization", &format!("Bearer {wrong}"))
                        .call(),
                )
                .0
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    // past the burst, this address's wrong secrets are answered without hashing
    let wrong = format!("weir_{id}_{:0>43}", 999);
    let (status, body) = get(&srv, "/api/v1/workflows/a", Some(&wrong));
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "too_many_requests", "{body}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", srv.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    println!("peak RSS {} MiB", peak_kib / 1024);
    assert!(peak_kib < 300 * 1024, "peak RSS {peak_kib} KiB");
    // the real token still works from this address
    assert_eq!(get(&srv, "/api/v1/workflows/a", Some(&real)).0, 200);
}

/// Finding 5: an `--insecure-local` server answers loopback names only, and takes changes only
/// from its own pages or clients that send no Origin.
#[test]
fn insecure_local_refuses_other_hosts_and_cross_site_changes() {
    let sb = Sandbox::new();
    let srv = ApiServer::start(&sb, &["--insecure-local"]);
    let yaml = echo("csrf");
    let send = |headers: &[(&str, &str)]| {
        let mut req = http()
            .post(srv.url("/api/v1/workflows/default"))
            .content_type("text/plain");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        answer(req.send(&yaml))
    };
    let (status, body) = send(&[("Origin", "http://evil.example")]);
    assert_eq!(status, 403, "{body}");
    let (status, body) = send(&[("Sec-Fetch-Site", "cross-site")]);
    assert_eq!(status, 403, "{body}");
    let (status, body) = answer(
        http()
            .get(srv.url("/api/v1/workflows/default"))
            .header("Host", "evil.example:2746")
            .call(),
    );
    assert_eq!(status, 403, "{body}");
    let (_, list) = get(&srv, "/api/v1/workflows/default", None);
    assert_eq!(list["items"], json!([]), "no cross-site run was made");
    // the server's own page, and a client without Origin
    let own = srv.base.trim_start_matches("http://").to_string();
    let (status, body) = send(&[("Origin", &format!("http://{own}"))]);
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&srv, "default", None, "?name=plain-client", &echo("x"));
    assert_eq!(status, 200, "{body}");
}

/// Findings 6 and 7: failed unauthenticated requests are not written to the audit log; actions
/// are filed under the namespace they act in, decoded, and cluster-template actions under none.
#[test]
fn the_audit_log_is_not_flooded_and_files_actions_where_they_act() {
    let sb = Sandbox::new();
    let editor = token(&sb, "a", "editor");
    let global = token(&sb, "*", "admin");
    let srv = ApiServer::start(&sb, &[]);
    let count = || {
        get(&srv, "/api/v1/audit", Some(&global)).1["items"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0)
    };
    let before = count();
    let long = "x".repeat(60_000);
    for _ in 0..50 {
        let (status, _) = answer(
            http()
                .post(srv.url(&format!("/api/v1/workflows/{long}")))
                .send("x"),
        );
        assert!(
            status == 401 || status == 431 || status == 414 || status == 400,
            "{status}"
        );
    }
    assert_eq!(count(), before, "anonymous failures are not audited");
    // `%61` is `a`
    let (status, body) = post(&srv, "%61", Some(&editor), "", &echo("encoded"));
    assert_eq!(status, 200, "{body}");
    let tpl = "kind: ClusterWorkflowTemplate\nmetadata: {name: shared}\nspec:\n  templates:\n  - name: t\n    container: {image: x, command: [echo]}\n";
    let (status, body) = send(
        &srv,
        "/api/v1/cluster-workflow-templates",
        Some(&global),
        "application/yaml",
        tpl,
    );
    assert_eq!(status, 200, "{body}");
    let items = get(&srv, "/api/v1/audit", Some(&global)).1["items"].clone();
    let items = items.as_array().unwrap();
    let submit = items
        .iter()
        .find(|e| e["target"] == "/api/v1/workflows/%61")
        .unwrap_or_else(|| panic!("{items:?}"));
    assert_eq!(submit["namespace"], "a");
    let cluster = items
        .iter()
        .find(|e| e["target"] == "/api/v1/cluster-workflow-templates")
        .unwrap_or_else(|| panic!("{items:?}"));
    assert_eq!(cluster["namespace"], "");
    // namespace `a`'s admin sees its submission
    let a_admin = token(&sb, "a", "admin");
    let (_, mine) = get(&srv, "/api/v1/audit?namespace=a", Some(&a_admin));
    assert!(mine.to_string().contains("/api/v1/workflows/%61"), "{mine}");
}

/// Finding 8: a memoize cache is the namespace's own: the same cache and key in another
/// namespace neither reads nor replaces its entry.
#[test]
fn memoize_caches_are_per_namespace() {
    let sb = Sandbox::new();
    let a = token(&sb, "a", "editor");
    let b = token(&sb, "b", "editor");
    let srv = ApiServer::start(&sb, &[]);
    let wf = |name: &str, value: &str| {
        format!(
            "kind: Workflow\nmetadata: {{name: {name}}}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    memoize: {{key: shared-key, maxAge: 1h, cache: {{configMap: {{name: results}}}}}}\n    container: {{image: x, command: [echo, {value}]}}\n"
        )
    };
    for (name, tok, ns, value) in [
        ("a1", &a, "a", "from-a"),
        ("b1", &b, "b", "poisoned-by-b"),
        ("a2", &a, "a", "again"),
    ] {
        let (status, body) = post(&srv, ns, Some(tok), "", &wf(name, value));
        assert_eq!(status, 200, "{body}");
        finished(&srv, ns, name, Some(tok));
    }
    let result = |ns: &str, name: &str, tok: &str| {
        let wf = finished(&srv, ns, name, Some(tok));
        wf["status"]["nodes"]
            .as_object()
            .unwrap()
            .values()
            .find_map(|n| n["outputs"]["result"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    assert_eq!(
        result("b", "b1", &b),
        "poisoned-by-b",
        "b did not read a's entry"
    );
    assert_eq!(
        result("a", "a2", &a),
        "from-a",
        "a's entry is a's, b did not replace it"
    );
}

/// Finding 9: `/metrics` without a token holds the process's own metrics only; workflow metrics
/// need a token and show its namespace's alone, with label values escaped.
#[test]
fn metrics_of_workflows_need_a_token_and_stay_in_their_namespace() {
    let sb = Sandbox::new();
    let a = token(&sb, "a", "editor");
    let b = token(&sb, "b", "viewer");
    let srv = ApiServer::start(&sb, &[]);
    let wf = "kind: Workflow\nmetadata: {name: forge}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    container: {image: x, command: [echo]}\n    metrics:\n      prometheus:\n      - name: team_a_secret_metric\n        help: a's\n        labels: [{key: who, value: \"x\\\"} 1\\nforged_metric{a=\\\"1\"}]\n        gauge: {value: '42', realtime: false}\n";
    let (status, body) = post(&srv, "a", Some(&a), "", wf);
    assert_eq!(status, 200, "{body}");
    finished(&srv, "a", "forge", Some(&a));
    let scrape = |tok: Option<&str>| {
        let mut req = http().get(srv.url("/metrics"));
        if let Some(t) = tok {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        req.call().unwrap().body_mut().read_to_string().unwrap()
    };
    let anonymous = scrape(None);
    assert!(anonymous.contains("weir_runs"), "{anonymous}");
    assert!(!anonymous.contains("team_a_secret_metric"), "{anonymous}");
    assert!(!scrape(Some(&b)).contains("team_a_secret_metric"));
    let own = scrape(Some(&a));
    assert!(own.contains("team_a_secret_metric"), "{own}");
    assert!(
        !own.lines().any(|l| l.starts_with("forged_metric")),
        "a label value forged a sample: {own}"
    );
}

/// Finding 10: a multi-line secret (a PEM key) and its encodings are masked in logs and in the
/// run's JSON, line by line.
#[test]
fn multi_line_and_encoded_secrets_are_masked() {
    let sb = Sandbox::new();
    let editor = token(&sb, "a", "editor");
    let srv = ApiServer::start(&sb, &[]);
    let body = "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu";
    let wf = format!(
        "kind: Secret\nmetadata: {{name: key}}\nstringData:\n  pem: |\n    -----BEGIN RSA PRIVATE KEY-----\n    {body}\n    -----END RSA PRIVATE KEY-----\n---\nkind: Workflow\nmetadata: {{name: leak}}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    script:\n      image: x\n      command: [sh]\n      env: [{{name: K, valueFrom: {{secretKeyRef: {{name: key, key: pem}}}}}}]\n      source: |\n        echo \"$K\"\n        printf %s \"$K\" | base64 -w0; echo\n"
    );
    let (status, resp) = post(&srv, "a", Some(&editor), "", &wf);
    assert_eq!(status, 200, "{resp}");
    let done = finished(&srv, "a", "leak", Some(&editor));
    let log = logs(&srv, "a", "leak", Some(&editor));
    assert!(log.contains("***"), "{log}");
    assert!(!log.contains(body) && !log.contains("BEGIN RSA"), "{log}");
    assert!(!log.contains("LS0tLS1CRUdJTi"), "base64 of the key: {log}");
    assert!(!done.to_string().contains(body), "{done}");
    let out = sb.weir(&["logs", "leak"]);
    assert!(!out.stdout.contains(body), "{}", out.stdout);
}

/// Finding 11: a taken `metadata.name` is a conflict: 50 concurrent submissions of one name make
/// one run and 49 answers 409.
#[test]
fn concurrent_submissions_of_one_name_make_one_run() {
    let sb = Sandbox::new();
    let srv = ApiServer::start(&sb, &["--insecure-local"]);
    let url = srv.url("/api/v1/workflows/default");
    let yaml = echo("only-once");
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let (url, yaml) = (url.clone(), yaml.clone());
            std::thread::spawn(move || {
                answer(
                    http()
                        .post(&url)
                        .content_type("application/yaml")
                        .send(&yaml),
                )
                .0
            })
        })
        .collect();
    let mut statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    statuses.sort();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        49,
        "{statuses:?}"
    );
    let (_, list) = get(&srv, "/api/v1/workflows/default", None);
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
}

/// Finding 11: names are unique per namespace. A name taken in another namespace is free in this
/// one (a 409 would tell it the other has such a run); each run is its own through every route
/// (get, logs, artifacts, delete), concurrently with the other; a name taken in this namespace is
/// a 409.
#[test]
fn a_name_taken_in_another_namespace_is_free_in_this_one() {
    let sb = Sandbox::new();
    let a = token(&sb, "a", "editor");
    let b = token(&sb, "b", "editor");
    let srv = ApiServer::start(&sb, &[]);
    let wf = |value: &str| {
        format!(
            "kind: Workflow\nmetadata: {{name: same}}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    outputs: {{artifacts: [{{name: out, path: /tmp/out, archive: {{none: {{}}}}}}]}}\n    container: {{image: x, command: [sh, -c, 'echo {value}; echo {value} > /tmp/out']}}\n"
        )
    };
    let (status, body) = post(&srv, "a", Some(&a), "", &wf("from-a"));
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&srv, "b", Some(&b), "", &wf("from-b"));
    assert_eq!(status, 200, "b may use a name a has: {body}");
    assert_eq!(body["metadata"]["name"], "same", "{body}");
    let (status, body) = post(&srv, "b", Some(&b), "", &wf("again"));
    assert_eq!(status, 409, "{body}");
    for (ns, tok, value, other) in [("a", &a, "from-a", "from-b"), ("b", &b, "from-b", "from-a")] {
        let done = finished(&srv, ns, "same", Some(tok));
        assert_eq!(done["status"]["phase"], "Succeeded", "{done}");
        assert_eq!(done["metadata"]["namespace"], ns, "{done}");
        let log = logs(&srv, ns, "same", Some(tok));
        assert!(log.contains(value) && !log.contains(other), "{ns}: {log}");
        let (status, arts) = get(
            &srv,
            &format!("/api/v1/workflows/{ns}/same/artifacts"),
            Some(tok),
        );
        assert_eq!(status, 200, "{arts}");
        let url = arts["items"][0]["url"].as_str().unwrap();
        let mut req = http().get(srv.url(url));
        req = req.header("Authorization", &format!("Bearer {tok}"));
        let bytes = req.call().unwrap().body_mut().read_to_vec().unwrap();
        let text = String::from_utf8_lossy(&bytes).to_string();
        assert_eq!(text.trim(), value, "{ns}'s artifact");
    }
    // each namespace lists its own; deleting b's leaves a's
    let (_, list) = get(&srv, "/api/v1/workflows/b", Some(&b));
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let mut req = http().delete(srv.url("/api/v1/workflows/b/same"));
    req = req.header("Authorization", &format!("Bearer {b}"));
    assert_eq!(answer(req.call()).0, 200);
    assert_eq!(get(&srv, "/api/v1/workflows/b/same", Some(&b)).0, 404);
    let kept = get(&srv, "/api/v1/workflows/a/same", Some(&a));
    assert_eq!(
        (kept.0, kept.1["status"]["phase"].clone()),
        (200, json!("Succeeded"))
    );
    assert!(logs(&srv, "a", "same", Some(&a)).contains("from-a"));
}

/// A fault inside the server is a 500 `internal` that tells the client nothing of it (no stored
/// text, no path, no SQL), only a reference to the server's log line that holds the detail.
#[test]
fn a_500_tells_nothing_but_a_reference_to_the_log() {
    let sb = Sandbox::new();
    let ok = sb.write("ok.yaml", &echo("victim"));
    assert_eq!(
        sb.weir(&["run", ok.to_str().unwrap(), "--name", "broken"])
            .code,
        0
    );
    // its stored submission replaced behind weir's back by text that is not JSON
    let script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.execute(\"UPDATE runs SET submission='{not json at /srv/secret' WHERE name='broken'\")\nc.commit()\n";
    let st = std::process::Command::new("python3")
        .args(["-c", script, sb.db.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let log = sb.dir.join("server.log");
    let srv = ApiServer::start_logged(&sb, &["--insecure-local"], &log);
    let (status, body) = get(&srv, "/api/v1/workflows/default/broken", None);
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "internal", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    for inside in [
        "json",
        "secret",
        "corrupt",
        "submission",
        sb.db.to_str().unwrap(),
    ] {
        assert!(!message.to_lowercase().contains(inside), "{message}");
    }
    let reference = message.rsplit(' ').next().unwrap();
    assert_eq!(reference.len(), 5, "{message}");
    let mut logged = String::new();
    wait_for(Duration::from_secs(10), || {
        logged = std::fs::read_to_string(&log).unwrap_or_default();
        logged.contains(&format!("{reference}: "))
    });
    let line = logged.lines().find(|l| l.contains(reference)).unwrap();
    assert!(
        line.contains("broken") && line.contains("corrupt"),
        "{line}"
    );
}

/// A database out of reach during a token check is a 503 `unavailable` (not a 401 that would
/// send the client to fetch another token), and the server answers again once it is back.
#[test]
fn a_database_out_of_reach_during_a_token_check_is_503() {
    let Some(sb) = Sandbox::postgres() else {
        return;
    };
    let first = token(&sb, "ml", "viewer");
    let second = token(&sb, "ml", "viewer");
    let srv = ApiServer::start(&sb, &[]);
    assert_eq!(get(&srv, "/api/v1/workflows/ml", Some(&first)).0, 200);
    let url = sb.db.to_str().unwrap().to_string();
    let db = url.rsplit('/').next().unwrap().to_string();
    let base = std::env::var("WEIR_TEST_PG").unwrap();
    let mut admin = postgres::Client::connect(&base, postgres::NoTls).unwrap();
    // nobody may connect, and the server's connections are cut
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {db} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}';"
        ))
        .unwrap();
    // a token not seen before needs the store: each try finds it out of reach
    for _ in 0..3 {
        let (status, body) = get(&srv, "/api/v1/workflows/ml", Some(&second));
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
    }
    admin
        .batch_execute(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"))
        .unwrap();
    wait_for(Duration::from_secs(30), || {
        get(&srv, "/api/v1/workflows/ml", Some(&second)).0 == 200
    });
}

/// Finding 12: connections that send nothing are closed by the server's header-read timeout,
/// and `/healthz` answers meanwhile.
#[test]
fn idle_connections_are_closed_and_health_still_answers() {
    let sb = Sandbox::new();
    let srv = ApiServer::start(&sb, &["--insecure-local"]);
    let addr = srv.base.trim_start_matches("http://").to_string();
    let mut idle: Vec<std::net::TcpStream> = (0..300)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    assert_eq!(srv.text("/healthz"), "ok\n");
    // each idle connection is closed by the server (read gives 0 bytes), within its timeout
    for s in idle.iter_mut().step_by(50) {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut buf = [0u8; 64];
        // a read that times out (the server kept the connection) fails the test
        let n = s
            .read(&mut buf)
            .expect("the server closes an idle connection");
        // hyper answers a timed-out header read with 408 or just closes
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    // a half-sent request is closed too
    let mut half = std::net::TcpStream::connect(&addr).unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    half.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut rest = Vec::new();
    half.read_to_end(&mut rest)
        .expect("the server closes a half-sent request");
    assert!(
        rest.is_empty() || String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(srv.text("/healthz"), "ok\n");
}

/// Finding 13: huge numbers are refused rather than wrapped, the running server applies
/// `ttlStrategy`, and every error answer is JSON.
#[test]
fn overflows_ttl_and_error_shapes() {
    let sb = Sandbox::new();
    let editor = token(&sb, "a", "editor");
    let srv = ApiServer::start(&sb, &[]);
    let auth = Some(editor.as_str());
    // a deadline or a backoff factor past what the clock holds is refused, naming its field
    let deadline = "kind: Workflow\nmetadata: {name: deadline}\nspec:\n  entrypoint: m\n  activeDeadlineSeconds: 9223372036854775807\n  templates:\n  - name: m\n    container: {image: x, command: [echo, hi]}\n";
    let (status, body) = post(&srv, "a", auth, "", deadline);
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string().contains("spec.activeDeadlineSeconds"),
        "{body}"
    );
    let huge = "kind: Workflow\nmetadata: {name: huge}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    retryStrategy: {limit: 3, backoff: {duration: '1', factor: '1e300'}}\n    container: {image: x, command: [sh, -c, 'exit 1']}\n";
    let (status, body) = post(&srv, "a", auth, "", huge);
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string().contains("retryStrategy.backoff.factor"),
        "{body}"
    );
    // the largest factor waits (for ever, here) rather than retrying back to back
    let backoff = "kind: Workflow\nmetadata: {name: backoff}\nspec:\n  entrypoint: m\n  templates:\n  - name: m\n    retryStrategy: {limit: 3, backoff: {duration: '1', factor: '1000'}}\n    container: {image: x, command: [sh, -c, 'exit 1']}\n";
    assert_eq!(post(&srv, "a", auth, "", backoff).0, 200);
    let mut wf = Value::Null;
    let failed_pods = |wf: &Value| {
        wf["status"]["nodes"].as_object().map_or(0, |n| {
            n.values()
                .filter(|n| n["type"] == "Pod" && n["phase"] == "Failed")
                .count()
        })
    };
    wait_for(Duration::from_secs(30), || {
        wf = get(&srv, "/api/v1/workflows/a/backoff", auth).1;
        failed_pods(&wf) >= 2
    });
    let pods = wf["status"]["nodes"]
        .as_object()
        .unwrap()
        .values()
        .filter(|n| n["type"] == "Pod")
        .count();
    assert_eq!(pods, 2, "the third attempt did not follow at once: {wf}");
    assert_eq!(wf["status"]["phase"], "Running", "{wf}");
    assert!(wf.to_string().contains("Backoff for"), "{wf}");
    // ttlStrategy: the running server deletes the run once it is due
    let ttl = "kind: Workflow\nmetadata: {name: shortlived}\nspec:\n  entrypoint: m\n  ttlStrategy: {secondsAfterCompletion: 0}\n  templates:\n  - name: m\n    container: {image: x, command: [echo, hi]}\n";
    assert_eq!(post(&srv, "a", auth, "", ttl).0, 200);
    wait_for(Duration::from_secs(30), || {
        get(&srv, "/api/v1/workflows/a/shortlived", auth).0 == 404
    });
    // error shapes: a query string axum cannot parse, a method a route lacks, duplicate keys
    let (status, body) = get(
        &srv,
        "/api/v1/workflows/a?listOptions.limit=x&limit=x",
        auth,
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    let resp = http()
        .patch(srv.url("/api/v1/workflows/a"))
        .header("Authorization", &format!("Bearer {editor}"))
        .send("")
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert!(
        resp.headers().get("allow").is_some(),
        "{:?}",
        resp.headers()
    );
    let (_, body) = answer(Ok(resp));
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    let dup = r#"{"workflow": {"metadata": {"name": "one", "name": "two"}, "spec": {}}}"#;
    let (status, body) = send(&srv, "/api/v1/workflows/a", auth, "application/json", dup);
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("duplicate key"), "{body}");
    // access_token in the query is for streams and downloads, not for changes
    let (status, body) = answer(
        http()
            .post(srv.url(&format!("/api/v1/workflows/a?access_token={editor}")))
            .content_type("application/yaml")
            .send(echo("via-query")),
    );
    assert_eq!(status, 401, "{body}");
    let stream = http()
        .get(srv.url(&format!(
            "/api/v1/workflow-events/a?access_token={editor}&name=backoff"
        )))
        .call()
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
}
