//! The SQLite store against a real database file: lock queues shared by several connections.

use weir_core::run::Lock;
use weir_store::{Acquire, Durability, Store};

fn lock(key: &str, limit: Option<u32>) -> Lock {
    Lock {
        key: key.into(),
        limit,
    }
}

#[test]
fn locks_are_granted_in_order_all_at_once_and_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.db");
    // two connections, as two weir processes would have
    let mut a = Store::open(&path, Durability::Process).unwrap();
    let mut b = Store::open(&path, Durability::Process).unwrap();
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
