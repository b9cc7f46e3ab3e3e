//! Power loss at any moment of a put, a delete or a repairing scrub: every acknowledged write
//! and delete survives, the store opens, and a repairing scrub then a plain scrub come back
//! clean.
//!
//! A SIGKILL leaves the page cache intact (see crash_consistency.rs); here the power goes. A
//! simulator (`shardguard::fault::power`) watches every call by which the store changes or
//! syncs its files and keeps only what a disk guarantees to keep: file content as of its last
//! fsync, directory entries as of the directory's last fsync. The sweep cuts the power at every
//! one of those calls of a fixed workload, twice: once keeping exactly the durable state, once
//! tearing what was not synced (seeded). Taking out any one fsync of a file or directory in the
//! put path makes it fail.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use common::copy_tree;
use shardguard::fault::power::{Aftermath, PowerLoss};
use shardguard::{Durability, Error, ScrubOptions, ScrubVerdict, Store};

/// A store's geometry for the sweep: its chunk size and pack threshold.
#[derive(Clone, Copy)]
struct Layout {
    chunk: u32,
    pack_threshold: u32,
}

/// Every object has shard files of its own.
const OWN_FILES: Layout = Layout {
    chunk: 4096,
    pack_threshold: 0,
};

/// Objects below 6000 bytes ("keep", "gone", the overwrite of "old", "late") go to packs; the
/// others keep shard files of their own, so writes of both kinds, and of one key in turn, meet.
const PACKING: Layout = Layout {
    chunk: 8192,
    pack_threshold: 6000,
};

/// One step of the workload.
enum Step {
    Put(&'static str, Vec<u8>),
    /// `put_many`: in a packing store, the small ones in one pack.
    PutMany(Vec<(&'static str, Vec<u8>)>),
    Delete(&'static str),
    ScrubRepair,
}

/// What the keys must read as after the reboot: each acknowledged state, and for the step the
/// power went in, either its effect or none.
#[derive(Default)]
struct Expected {
    acknowledged: BTreeMap<&'static str, Option<Vec<u8>>>,
    in_flight: Vec<(&'static str, Option<Vec<u8>>)>,
}

impl Expected {
    fn allows(&self, key: &str, got: &Option<Vec<u8>>) -> bool {
        let acked = self.acknowledged.get(key).cloned().flatten();
        *got == acked || self.in_flight.iter().any(|(k, v)| *k == key && v == got)
    }

    fn in_flight(&self, key: &str) -> bool {
        self.in_flight.iter().any(|(k, _)| *k == key)
    }
}

/// The objects stored before the power-loss watch begins: key, seed, length.
const STORED: [(&str, u64, usize); 4] = [
    ("keep", 1, 5000),
    ("old", 2, 10_000),
    ("gone", 3, 3000),
    ("big", 4, 40_000),
];

/// A store holding `STORED`, with some damage for the workload's scrub to repair (a rotten
/// chunk, a lost shard file).
fn baseline(root: &Path, layout: Layout) {
    let store = Store::builder()
        .durability(Durability::Fsync)
        .data_shards(3)
        .parity_shards(2)
        .chunk_size(layout.chunk)
        .pack_threshold(layout.pack_threshold)
        .create(root)
        .unwrap();
    for (key, seed, len) in STORED {
        store.put(key, &common::data(seed, len)[..]).unwrap();
    }
    // Closed and opened again: small puts are in packs of files of their own by then (their
    // small-write log folded), which the damage below is done to.
    drop(store);
    let store = Store::open(root).unwrap();
    common::rot(
        &store.shard_path("big", 0).unwrap(),
        common::chunk_offset("big", layout.chunk, 1),
        10,
    );
    fs::remove_file(store.shard_path("keep", 1).unwrap()).unwrap();
}

/// What the keys read as before the workload.
fn stored() -> Expected {
    let mut expected = Expected::default();
    for (key, seed, len) in STORED {
        expected.acknowledged.insert(key, Some(common::data(seed, len)));
    }
    expected
}

/// Keys the packing workload writes over and over to fill the small-write log's segments.
const FILLING: [&str; 4] = ["fill-0", "fill-1", "fill-2", "fill-3"];

fn workload(layout: Layout) -> Vec<Step> {
    let mut steps = vec![
        Step::Put("new", common::data(10, 9000)),
        Step::Put("old", common::data(11, 5_500)),
        Step::Delete("gone"),
        Step::ScrubRepair,
        Step::Put("late", common::data(12, 2000)),
    ];
    if layout.pack_threshold > 0 {
        // Small puts that fill the log's segments (8 KiB under the watch, four of these
        // records): each full one is kept (its index written at its end on every location),
        // the next one made; the repairing scrub below folds them. The sweep cuts every step
        // of the keeping and of that fold.
        steps.extend((0..14).map(|i| Step::Put(FILLING[i % 4], common::data(20 + i as u64, 1500))));
    }
    steps.extend([
        Step::PutMany(vec![
            ("batch-a", common::data(13, 1500)),
            ("keep", common::data(14, 2500)),
            ("batch-b", common::data(15, 7000)),
        ]),
        Step::Delete("new"),
        // In a packing store, compacts the packs written since the first (dropping the deletes
        // of "gone" and "new", which nothing older is left for).
        Step::ScrubRepair,
    ]);
    steps
}

const KEYS: [&str; 12] = [
    "keep", "old", "gone", "big", "new", "late", "batch-a", "batch-b", FILLING[0], FILLING[1], FILLING[2],
    FILLING[3],
];

thread_local! {
    /// Packs compacted by the workload's repairing scrubs run on this thread.
    static PACKS_COMPACTED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Steps of the workload after which a small-write log segment was open (its puts logged).
    static STEPS_LOGGING: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Steps of the workload after which a kept log segment was on some location.
    static STEPS_KEEPING: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Whether any location of the store at `dir` holds a kept log segment.
fn keeping(dir: &Path) -> bool {
    fs::read_dir(dir).unwrap().flatten().any(|location| {
        fs::read_dir(location.path().join("log"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|segment| fs::read(segment.path()).is_ok_and(|bytes| common::kept_segment(&bytes)))
    })
}

/// Whether any location of the store at `dir` holds a small-write log segment.
fn logging(dir: &Path) -> bool {
    fs::read_dir(dir).unwrap().flatten().any(|location| {
        fs::read_dir(location.path().join("log")).is_ok_and(|mut segments| segments.next().is_some())
    })
}

fn repair_options() -> ScrubOptions {
    ScrubOptions::default().repair(true).jobs(1)
}

/// What `key` reads as: its bytes, or `None` if absent. `Err` for the one error an interrupted
/// put may leave until a repair: a newest write on fewer locations than a read needs, and no
/// older one to fall back on.
fn read(store: &Store, key: &str, ctx: &str) -> Result<Option<Vec<u8>>, Error> {
    match store.get_bytes(key) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e @ Error::NoQuorum { .. }) => Err(e),
        Err(e) => panic!("{ctx}: {key:?} reads as an error: {e}"),
    }
}

/// Runs the workload in a copy of `base` under a power-loss watch; returns the number of
/// watched calls and the reboot's outcome checked.
fn run_case(
    (base, layout): (&Path, Layout),
    dir: &Path,
    cut_after: Option<u64>,
    aftermath: Aftermath,
    mut expected: Expected,
) -> u64 {
    let ctx = format!("power cut after call {cut_after:?}, {aftermath:?}");
    copy_tree(base, dir);
    let watch = PowerLoss::watch(dir, cut_after, aftermath).unwrap();
    match Store::builder().durability(Durability::Fsync).open(dir) {
        Ok(store) => {
            for step in workload(layout) {
                let result = match step {
                    Step::Put(key, bytes) => {
                        expected.in_flight = vec![(key, Some(bytes.clone()))];
                        store.put(key, &bytes[..]).map(drop)
                    }
                    Step::PutMany(objects) => {
                        expected.in_flight = objects.iter().map(|(k, b)| (*k, Some(b.clone()))).collect();
                        store
                            .put_many(objects.iter().map(|(k, b)| (*k, &b[..])))
                            .map(drop)
                    }
                    Step::Delete(key) => {
                        expected.in_flight = vec![(key, None)];
                        store.delete(key)
                    }
                    Step::ScrubRepair => {
                        expected.in_flight = Vec::new();
                        store.scrub(&repair_options(), &|_| {}).map(|report| {
                            PACKS_COMPACTED.set(PACKS_COMPACTED.get() + report.compaction.packs_compacted);
                        })
                    }
                };
                if !watch.power_lost() && logging(dir) {
                    STEPS_LOGGING.set(STEPS_LOGGING.get() + 1);
                    if keeping(dir) {
                        STEPS_KEEPING.set(STEPS_KEEPING.get() + 1);
                    }
                }
                match result {
                    Ok(()) => {
                        for (key, value) in std::mem::take(&mut expected.in_flight) {
                            expected.acknowledged.insert(key, value);
                        }
                    }
                    Err(e) => {
                        assert!(watch.power_lost(), "{ctx}: failed with the power on: {e}");
                        break;
                    }
                }
            }
        }
        Err(e) => assert!(
            watch.power_lost(),
            "{ctx}: the store did not open with the power on: {e}"
        ),
    }
    let calls = watch.calls();
    let ctx = format!("{ctx} ({:?})", watch.cut_at());
    watch.reboot().unwrap();
    check_after_reboot(dir, &expected, &ctx);
    calls
}

fn check_after_reboot(dir: &Path, expected: &Expected, ctx: &str) {
    let store = Store::builder()
        .durability(Durability::PageCache)
        .open(dir)
        .unwrap_or_else(|e| panic!("{ctx}: the store does not open after the reboot: {e}"));
    let before: Vec<Result<Option<Vec<u8>>, Error>> = KEYS.iter().map(|k| read(&store, k, ctx)).collect();
    for (key, got) in KEYS.iter().zip(&before) {
        match got {
            Ok(got) => assert!(
                expected.allows(key, got),
                "{ctx}: {key:?} reads as {} bytes, neither its acknowledged state nor the interrupted step's",
                got.as_ref().map_or(-1, |b| b.len() as i64)
            ),
            Err(e) => assert!(
                expected.in_flight(key),
                "{ctx}: {key:?}, not being written at the cut, reads as an error: {e}"
            ),
        }
    }
    let repair = store.scrub(&repair_options(), &|_| {}).unwrap();
    assert!(
        matches!(repair.verdict(), ScrubVerdict::Clean | ScrubVerdict::Repaired),
        "{ctx}: the repairing scrub says {:?}: {repair:?}",
        repair.verdict()
    );
    let verify = store.scrub(&ScrubOptions::default(), &|_| {}).unwrap();
    assert_eq!(
        verify.verdict(),
        ScrubVerdict::Clean,
        "{ctx}: after repair: {verify:?}"
    );
    for (key, was) in KEYS.iter().zip(&before) {
        let now = read(&store, key, ctx).unwrap_or_else(|e| panic!("{ctx}: {key:?} after repair: {e}"));
        match was {
            Ok(was) => assert!(now == *was, "{ctx}: the repair changed what {key:?} reads as"),
            Err(_) => assert!(expected.allows(key, &now), "{ctx}: {key:?} after repair"),
        }
    }
}

#[test]
fn every_acknowledged_write_and_delete_survives_a_power_cut_at_any_call() {
    sweep(OWN_FILES);
}

/// The same with small objects in packs: a pack is committed as any object is, and its table,
/// in every shard file, names what it holds even when too few of its files survived to read it.
#[test]
fn packed_writes_and_deletes_survive_a_power_cut_at_any_call() {
    sweep(PACKING);
}

fn sweep(layout: Layout) {
    // In memory where there is a tmpfs: the simulator makes the syncs, so the filesystem only
    // sets the speed of the hundreds of copies and reboots.
    let shm = Path::new("/dev/shm");
    let dir = match shm.is_dir() {
        true => tempfile::tempdir_in(shm),
        false => tempfile::tempdir(),
    }
    .unwrap();
    let base = dir.path().join("base");
    baseline(&base, layout);
    // A run with the power on to the end counts the cut points.
    let calls = run_case(
        (&base, layout),
        &dir.path().join("count"),
        None,
        Aftermath::Drop,
        stored(),
    );
    // In a packing store the sweep cuts compactions too.
    let compacted = PACKS_COMPACTED.get();
    // In a packing store it cuts the small-write log too.
    let logging = STEPS_LOGGING.get();
    assert_eq!(
        logging > 0,
        layout.pack_threshold > 0,
        "{logging} steps with a log open"
    );
    assert_eq!(
        compacted > 0,
        layout.pack_threshold > 0,
        "{compacted} packs compacted"
    );
    // And full segments kept.
    let keeping = STEPS_KEEPING.get();
    assert_eq!(
        keeping > 0,
        layout.pack_threshold > 0,
        "{keeping} steps with a kept segment"
    );
    let cases: Vec<(u64, Aftermath)> = (0..=calls)
        .flat_map(|cut| {
            [
                (cut, Aftermath::Drop),
                (cut, Aftermath::Tear { seed: cut }),
                (
                    cut,
                    Aftermath::Tear {
                        seed: cut ^ 0x5eed_0000,
                    },
                ),
            ]
        })
        .collect();
    // Two workers, each case in its own directory; the first failure stops both.
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for worker in 0..2 {
            let (cases, base, dir, failed) = (&cases, &base, dir.path(), &failed);
            scope.spawn(move || {
                for (i, &(cut, aftermath)) in cases.iter().enumerate().skip(worker).step_by(2) {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let case = dir.join(format!("case-{i}"));
                    let run = std::panic::catch_unwind(|| {
                        run_case((base, layout), &case, Some(cut), aftermath, stored())
                    });
                    if let Err(panic) = run {
                        failed.store(true, Ordering::Relaxed);
                        std::panic::resume_unwind(panic);
                    }
                    fs::remove_dir_all(&case).unwrap();
                }
            });
        }
    });
    eprintln!(
        "{} cut points ({} calls, 3 aftermaths each)",
        cases.len(),
        calls + 1
    );
    assert!(cases.len() >= 500, "only {} cut points", cases.len());
}
