//! Several processes putting and reading one key at once: every read returns one complete
//! version (never a mix), and afterwards the key holds exactly one of the written versions.

mod common;

use std::process::Child;

use common::data;
use common::spawn;
use shardguard::{ShardState, Store};

#[test]
fn concurrent_writers_and_readers_of_one_key_see_whole_versions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let root_s = root.to_str().unwrap();
    let store = Store::create(&root, &common::config(3, 2, 64 << 10)).unwrap();
    let versions: Vec<Vec<u8>> = (0..4)
        .map(|i| data(100 + i, (1 << 20) + i as usize * 1000))
        .collect();
    let files: Vec<String> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let f = dir.path().join(format!("v{i}"));
            std::fs::write(&f, v).unwrap();
            f.to_str().unwrap().to_owned()
        })
        .collect();
    store.put("key", &versions[0][..]).unwrap();
    for round in 0..5 {
        let writers: Vec<Child> = files.iter().map(|f| spawn(&["put", root_s, "key", f])).collect();
        let readers: Vec<Child> = (0..4).map(|_| spawn(&["get", root_s, "key"])).collect();
        for w in writers {
            let out = w.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for r in readers {
            let out = r.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                versions.contains(&out.stdout),
                "round {round}: a read returned a mix"
            );
        }
        let got = store.get_bytes("key").unwrap();
        assert!(versions.contains(&got), "round {round}");
        // Exactly one version survives, complete on every location.
        let stat = store.stat("key").unwrap();
        assert!(
            stat.shards.iter().all(|s| s.state == ShardState::Healthy),
            "{stat:?}"
        );
        assert_eq!(
            stat.version,
            2 + 4 * (round + 1) - 1,
            "every put got its own version"
        );
    }
}

#[test]
fn threads_sharing_one_store_serialize_writes() {
    let (_dir, store) = common::store(2, 1, 4096);
    let versions: Vec<Vec<u8>> = (0..4).map(|i| data(i, 50_000)).collect();
    std::thread::scope(|s| {
        for v in &versions {
            let (store, versions) = (&store, &versions);
            s.spawn(move || {
                for _ in 0..10 {
                    store.put("key", &v[..]).unwrap();
                    let got = store.get_bytes("key").unwrap();
                    assert!(versions.contains(&got));
                }
            });
        }
    });
    assert_eq!(store.stat("key").unwrap().version, 40);
}
