//! One failed fsync anywhere (a shard file's, a directory's, a patch's, a location's syncfs, an
//! identity's) poisons the store: no further write until it is reopened, with a clear error.
//! The kernel may have dropped the pages whose fsync failed, so a retry could report success for
//! data that is gone (the USENIX ATC '20 fsync study).

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{chunk_offset, data, rot, shard_paths};
use shardguard::fault::{Fault, FaultPlan, Rule};
use shardguard::location::ObjectId;
use shardguard::{placement, Durability, Error, ScrubOptions, Store};

const CHUNK: u32 = 1024;

fn faulty(dir: &Path, slot: usize) -> (Arc<FaultPlan>, Store) {
    let plan = FaultPlan::new(slot as u64);
    plan.inject(Rule::at(slot, Fault::FsyncError));
    let store = Store::builder()
        .durability(Durability::PageCache)
        .location_wrapper(plan.wrapper())
        .open(dir)
        .unwrap();
    (plan, store)
}

fn repair() -> ScrubOptions {
    ScrubOptions::default().repair(true)
}

/// The store refuses every kind of write, and a reopened one accepts them again.
fn assert_poisoned(dir: &Path, store: &Store, what: &str) {
    assert!(
        matches!(store.put("other", &b"x"[..]), Err(Error::Poisoned)),
        "{what}: put after"
    );
    assert!(
        matches!(store.delete("k"), Err(Error::Poisoned)),
        "{what}: delete after"
    );
    assert!(
        matches!(store.scrub(&repair(), &|_| {}), Err(Error::Poisoned)),
        "{what}: repair after"
    );
    let reopened = common::reopen(dir);
    reopened.put("other", &b"x"[..]).unwrap();
}

/// The slot holding `shard` of key "k".
fn slot_of(store: &Store, shard: usize) -> usize {
    placement::slot_of_shard(ObjectId::of_key("k"), shard, store.geometry().shards())
}

#[test]
fn a_failed_fsync_of_a_shard_file_during_a_put_poisons() {
    let (dir, store) = common::store(4, 2, CHUNK);
    drop(store);
    let (_plan, store) = faulty(dir.path(), 0);
    let _ = store.put("k", &data(1, 9000)[..]);
    assert_poisoned(dir.path(), &store, "put");
}

#[test]
fn a_failed_fsync_of_a_patched_chunk_poisons() {
    let (dir, store) = common::store(4, 2, CHUNK);
    store.put("k", &data(2, 9000)[..]).unwrap();
    rot(&shard_paths(&store, "k")[1], chunk_offset("k", CHUNK, 0) + 5, 2);
    let slot = slot_of(&store, 1);
    let (_plan, store) = faulty(dir.path(), slot);
    assert!(matches!(store.scrub(&repair(), &|_| {}), Err(Error::Poisoned)));
    assert_poisoned(dir.path(), &store, "patch");
}

#[test]
fn a_failed_syncfs_after_rebuilding_a_shard_file_poisons() {
    let (dir, store) = common::store(4, 2, CHUNK);
    store.put("k", &data(3, 9000)[..]).unwrap();
    std::fs::remove_file(&shard_paths(&store, "k")[2]).unwrap();
    let slot = slot_of(&store, 2);
    let (_plan, store) = faulty(dir.path(), slot);
    assert!(store.scrub(&repair(), &|_| {}).is_err());
    assert_poisoned(dir.path(), &store, "rebuild");
}

#[test]
fn a_failed_directory_fsync_after_removing_a_leftover_poisons() {
    let (dir, store) = common::store(4, 2, CHUNK);
    store.put("k", &data(4, 9000)[..]).unwrap();
    let old = shard_paths(&store, "k")[3].clone();
    let saved = std::fs::read(&old).unwrap();
    store.put("k", &data(5, 9000)[..]).unwrap();
    std::fs::write(&old, saved).unwrap(); // an older write put back: a leftover
    let slot = slot_of(&store, 3);
    let (_plan, store) = faulty(dir.path(), slot);
    assert!(matches!(store.scrub(&repair(), &|_| {}), Err(Error::Poisoned)));
    assert_poisoned(dir.path(), &store, "leftover removal");
}

#[test]
fn a_failed_fsync_of_a_rewritten_identity_poisons() {
    let (dir, store) = common::store(4, 2, CHUNK);
    store.put("k", &data(6, 9000)[..]).unwrap();
    let location = store.locations()[4].clone();
    std::fs::remove_file(location.join("SHARDGUARD-LOCATION")).unwrap();
    let (_plan, store) = faulty(dir.path(), 4);
    assert!(store.scrub(&repair(), &|_| {}).is_err());
    assert_poisoned(dir.path(), &store, "identity");
}

#[test]
fn a_failed_fsync_during_a_delete_poisons() {
    let (dir, store) = common::store(4, 2, CHUNK);
    store.put("k", &data(7, 9000)[..]).unwrap();
    let (_plan, store) = faulty(dir.path(), 5);
    let _ = store.delete("k");
    assert_poisoned(dir.path(), &store, "delete");
}
