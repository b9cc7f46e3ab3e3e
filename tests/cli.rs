//! The `shardguard` binary: every command works end to end, errors are one line on stderr, and
//! exit codes are the documented ones (0 ok, 1 not found, 2 usage, 4 unrecoverable, 8 other).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{data, sg, spawn};

fn sg_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardguard"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// A 2 + 1 store with 4 KiB chunks, made by `init`, in `dir/s`.
fn small_store(dir: &Path) -> std::path::PathBuf {
    let store = dir.join("s");
    let out = sg(&["init", p(&store), "-k", "2", "-m", "1", "--chunk-size", "4KiB"]);
    assert_eq!(code(&out), 0, "{out:?}");
    store
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally")
}

/// An error is exactly one line on stderr, without panic text.
fn assert_one_line_error(out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "stderr: {err}");
    assert!(err.starts_with("shardguard: "), "stderr: {err}");
    assert!(!err.contains("panicked"), "stderr: {err}");
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn init_put_get_ls_stat_rm_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    let out = sg(&[
        "init",
        p(&store),
        "--data",
        "3",
        "--parity",
        "2",
        "--chunk-size",
        "64KiB",
    ]);
    assert_eq!(code(&out), 0, "{out:?}");
    let bytes = data(1, 300_000);
    let file = dir.path().join("in.bin");
    std::fs::write(&file, &bytes).unwrap();
    assert_eq!(code(&sg(&["put", p(&store), "from-file", p(&file)])), 0);
    assert_eq!(code(&sg_stdin(&["put", p(&store), "from-stdin"], &bytes)), 0);
    assert_eq!(code(&sg_stdin(&["put", p(&store), "dash", "-"], b"x")), 0);
    let got = sg(&["get", p(&store), "from-stdin"]);
    assert_eq!(code(&got), 0);
    assert!(got.stdout == bytes);
    let target = dir.path().join("out.bin");
    assert_eq!(code(&sg(&["get", p(&store), "from-file", "-o", p(&target)])), 0);
    assert!(std::fs::read(&target).unwrap() == bytes);
    let ls = sg(&["ls", p(&store)]);
    assert_eq!(
        String::from_utf8_lossy(&ls.stdout),
        "dash\nfrom-file\nfrom-stdin\n"
    );
    let stat = sg(&["stat", p(&store), "from-file"]);
    let text = String::from_utf8_lossy(&stat.stdout);
    assert!(text.contains("size:     300000 bytes"), "{text}");
    assert_eq!(text.matches("healthy").count(), 5, "{text}");
    assert_eq!(code(&sg(&["rm", p(&store), "dash"])), 0);
    let ls = sg(&["ls", "--long", p(&store)]);
    assert_eq!(String::from_utf8_lossy(&ls.stdout).lines().count(), 2);
}

#[test]
fn exit_codes_and_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    // 1: not found.
    let out = sg(&["get", p(&store), "nope"]);
    assert_eq!(code(&out), 1);
    assert_one_line_error(&out);
    assert_eq!(code(&sg(&["rm", p(&store), "nope"])), 1);
    // 2: usage errors: bad flags, bad sizes, invalid keys, impossible geometry.
    assert_eq!(code(&sg(&["frobnicate"])), 2);
    assert_eq!(
        code(&sg(&["init", p(&dir.path().join("t")), "--chunk-size", "lots"])),
        2
    );
    let out = sg(&["put", p(&store), ""]);
    assert_eq!(code(&out), 2);
    assert_one_line_error(&out);
    let out = sg(&["init", p(&dir.path().join("u")), "-k", "0"]);
    assert_eq!(code(&out), 2);
    assert_one_line_error(&out);
    // 4: more chunks lost than the parity covers.
    assert_eq!(code(&sg_stdin(&["put", p(&store), "k"], &data(2, 50_000))), 0);
    for loc in ["loc-00", "loc-01"] {
        let objects = store.join(loc).join("objects");
        for bucket in std::fs::read_dir(&objects).unwrap() {
            for object in std::fs::read_dir(bucket.unwrap().path()).unwrap() {
                for shard in std::fs::read_dir(object.unwrap().path()).unwrap() {
                    let path = shard.unwrap().path();
                    let mut bytes = std::fs::read(&path).unwrap();
                    let len = bytes.len();
                    bytes[len - 10] ^= 0xff;
                    std::fs::write(&path, bytes).unwrap();
                }
            }
        }
    }
    let target = dir.path().join("never.bin");
    let out = sg(&["get", p(&store), "k", "-o", p(&target)]);
    assert_eq!(code(&out), 4);
    assert_one_line_error(&out);
    assert!(!target.exists(), "no partial output file is left behind");
    // 8: not a store.
    let out = sg(&["ls", p(dir.path())]);
    assert_eq!(code(&out), 8);
    assert_one_line_error(&out);
    // init refuses to overwrite a store: a usage error.
    assert_eq!(code(&sg(&["init", p(&store)])), 2);
}

#[test]
fn help_documents_the_exit_codes() {
    let help = String::from_utf8(sg(&["--help"]).stdout).unwrap();
    for line in [
        "0  success",
        "1  key not found",
        "2  usage error",
        "4  data unrecoverable",
        "8  any other",
    ] {
        assert!(help.contains(line), "{line:?} missing from --help");
    }
}

#[test]
fn explicit_locations_outside_the_root_work() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    let disks: Vec<String> = (0..3)
        .map(|i| p(&dir.path().join(format!("disk{i}"))).to_owned())
        .collect();
    let mut args = vec!["init", p(&store), "-k", "2", "-m", "1"];
    for d in &disks {
        args.extend(["--location", d.as_str()]);
    }
    assert_eq!(code(&sg(&args)), 0);
    assert_eq!(code(&sg_stdin(&["put", p(&store), "k"], b"hello")), 0);
    assert!(std::path::Path::new(&disks[0]).join("objects").is_dir());
    assert_eq!(sg(&["get", p(&store), "k"]).stdout, b"hello");
    // Too few locations for k + m.
    let out = sg(&[
        "init",
        p(&dir.path().join("t")),
        "-k",
        "2",
        "-m",
        "1",
        "--location",
        &disks[0],
    ]);
    assert_eq!(code(&out), 2);
}

#[test]
fn a_closed_stdout_ends_quietly_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    for i in 0..50 {
        assert_eq!(code(&sg_stdin(&["put", p(&store), &format!("k{i}")], b"x")), 0);
    }
    for args in [
        vec!["ls", p(&store)],
        vec!["scrub", p(&store)],
        vec!["get", p(&store), "k1"],
    ] {
        let mut child = spawn(&args);
        // Like `| head -0`: the reader goes away before anything is read.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(matches!(out.status.code(), Some(0 | 1 | 3)), "{args:?}: {out:?}");
    }
}

#[test]
fn a_get_whose_reader_goes_away_ends_quietly_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    assert_eq!(code(&sg_stdin(&["put", p(&store), "big"], &data(1, 2 << 20))), 0);
    let mut child = spawn(&["get", p(&store), "big"]);
    drop(child.stdout.take()); // like `| head -c 10`
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{out:?}");
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_zero_rate_and_absurd_job_counts_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    for args in [
        vec!["scrub", p(&store), "--max-rate", "0"],
        vec!["scrub", p(&store), "--jobs", "65535"],
        vec!["scrub", p(&store), "--jobs", "0"],
    ] {
        let out = sg(&args);
        assert_eq!(code(&out), 2, "{args:?}: {out:?}");
    }
    let help = String::from_utf8_lossy(&sg(&["scrub", "--help"]).stdout).into_owned();
    assert!(
        help.contains("omit it for no cap") && help.contains("1 to 256"),
        "{help}"
    );
}

#[test]
fn put_refuses_to_read_a_terminal_unless_told_to() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    // `script` gives the command a terminal as its standard input.
    let command = format!("{} put {} k", env!("CARGO_BIN_EXE_shardguard"), p(&store));
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("standard input is a terminal"));
    // Nothing was stored.
    assert_eq!(code(&sg(&["get", p(&store), "k"])), 1);
}

#[test]
fn get_no_clobber_keeps_an_existing_file_and_errors_name_the_users_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    assert_eq!(code(&sg_stdin(&["put", p(&store), "k"], b"new bytes")), 0);
    let out_file = dir.path().join("out");
    std::fs::write(&out_file, b"precious").unwrap();
    let out = sg(&["get", p(&store), "k", "-o", p(&out_file), "--no-clobber"]);
    assert_eq!(code(&out), 2, "{out:?}");
    assert_one_line_error(&out);
    assert_eq!(std::fs::read(&out_file).unwrap(), b"precious");
    // Without it the file is replaced (the documented default).
    assert_eq!(code(&sg(&["get", p(&store), "k", "-o", p(&out_file)])), 0);
    assert_eq!(std::fs::read(&out_file).unwrap(), b"new bytes");
    // A directory that does not exist is named as the user gave it, not as a temporary file.
    let out = sg(&["get", p(&store), "k", "-o", "/nonexistent-dir/out"]);
    assert_eq!(code(&out), 8);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent-dir/out") && !err.contains("shardguard-tmp"),
        "{err}"
    );
    // A directory given as the file to put is named.
    let out = sg(&["put", p(&store), "k2", p(dir.path())]);
    assert_eq!(code(&out), 2, "{out:?}");
    assert_one_line_error(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("a directory"));
}

#[test]
fn a_put_with_a_location_down_warns_of_reduced_redundancy() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    assert_eq!(code(&sg(&["init", p(&store), "--chunk-size", "4KiB"])), 0);
    std::fs::rename(store.join("loc-02"), dir.path().join("unplugged")).unwrap();
    let out = sg_stdin(&["put", p(&store), "k"], &data(2, 10_000));
    assert_eq!(code(&out), 0, "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reduced redundancy: 5 of 6 shards"), "{err}");
}

#[test]
fn stat_says_chunks_were_not_verified_and_verify_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    assert_eq!(code(&sg_stdin(&["put", p(&store), "k"], &data(3, 20_000))), 0);
    let out = sg(&["stat", p(&store), "k"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("chunks not verified"));
    // Two of three shard files rotten beyond the parity: stat's headers look fine...
    let shards: Vec<_> = (0..2).map(|s| shard_file(&store, "k", s)).collect();
    for shard in &shards {
        common::rot(shard, common::chunk_offset("k", 4096, 0), 100);
    }
    assert_eq!(code(&sg(&["stat", p(&store), "k"])), 0);
    // ...and --verify reads the chunks and says the truth.
    let out = sg(&["stat", p(&store), "k", "--verify"]);
    assert_eq!(code(&out), 4, "{out:?}");
}

fn shard_file(store: &Path, key: &str, shard: usize) -> std::path::PathBuf {
    shardguard::Store::open(store)
        .unwrap()
        .shard_path(key, shard)
        .unwrap()
}

#[test]
fn init_refuses_locations_that_are_one_directory_nested_or_the_stores_own() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    std::fs::create_dir(d("real")).unwrap();
    std::os::unix::fs::symlink(d("real"), d("alias")).unwrap();
    let store = d("s");
    let cases: Vec<(&str, Vec<std::path::PathBuf>)> = vec![
        ("the same twice", vec![d("a"), d("a"), d("b")]),
        ("the same through a link", vec![d("real"), d("alias"), d("b")]),
        ("nested", vec![d("a"), d("a/inner"), d("b")]),
        ("the store's root", vec![store.clone(), d("a"), d("b")]),
        (
            "inside the store's lock directory",
            vec![store.join("locks/x"), d("a"), d("b")],
        ),
    ];
    for (what, locations) in cases {
        let mut args = vec!["init", p(&store), "-k", "2", "-m", "1"];
        for l in &locations {
            args.extend(["--location", p(l)]);
        }
        let out = sg(&args);
        assert_eq!(code(&out), 2, "{what}: {out:?}");
        assert_one_line_error(&out);
        assert!(
            !store.join("shardguard.store").exists(),
            "{what}: a store was made"
        );
    }
}

#[test]
fn init_resolves_relative_locations_against_the_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let store = dir.path().join("s");
    let out = Command::new(env!("CARGO_BIN_EXE_shardguard"))
        .current_dir(&work)
        .args(["init", p(&store), "-k", "2", "-m", "1"])
        .args(["--location", "d0", "--location", "d1", "--location", "d2"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{out:?}");
    for i in 0..3 {
        assert!(work.join(format!("d{i}/SHARDGUARD-LOCATION")).exists());
        assert!(!store.join(format!("d{i}")).exists());
    }
    // Recorded absolute: the store works from any directory.
    assert_eq!(code(&sg_stdin(&["put", p(&store), "k"], b"x")), 0);
    assert_eq!(sg(&["get", p(&store), "k"]).stdout, b"x");
}

#[test]
fn init_on_a_store_or_a_file_and_commands_on_a_non_store_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    let out = sg(&["init", p(&store)]);
    assert_eq!(code(&out), 2, "{out:?}");
    assert_one_line_error(&out);
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let out = sg(&["init", p(&file)]);
    assert_eq!(code(&out), 2, "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a directory"),
        "{out:?}"
    );
    let out = sg(&["ls", p(dir.path())]);
    assert_one_line_error(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a shardguard store"),
        "{out:?}"
    );
}

#[test]
fn an_absent_an_empty_and_a_foreign_location_are_told_apart_and_repair_never_advises_itself() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    assert_eq!(code(&sg(&["init", p(&store), "--chunk-size", "4KiB"])), 0);
    assert_eq!(code(&sg_stdin(&["put", p(&store), "k"], &data(4, 9000))), 0);
    // Slot 0 unmounted (its directory gone), slot 1 a fresh empty disk, slot 2 another store's.
    std::fs::rename(store.join("loc-00"), dir.path().join("unmounted")).unwrap();
    std::fs::remove_dir_all(store.join("loc-01")).unwrap();
    std::fs::create_dir(store.join("loc-01")).unwrap();
    let other = dir.path().join("other");
    assert_eq!(code(&sg(&["init", p(&other)])), 0);
    std::fs::remove_dir_all(store.join("loc-02")).unwrap();
    std::fs::rename(other.join("loc-02"), store.join("loc-02")).unwrap();
    let status = String::from_utf8_lossy(&sg(&["status", p(&store)]).stdout).into_owned();
    let line = |slot: &str| status.lines().find(|l| l.contains(slot)).unwrap_or("").to_owned();
    assert!(
        line("loc-00").contains("does not exist (disk not mounted?)"),
        "{status}"
    );
    assert!(line("loc-01").contains("no identity file"), "{status}");
    assert!(
        line("loc-02").contains("another store") && line("loc-02").contains("never written"),
        "{status}"
    );
    let out = sg(&["scrub", p(&store), "--repair"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code(&out), 3, "{report}");
    assert!(!report.contains("run scrub --repair"), "{report}");
    assert!(
        !store.join("loc-00").exists(),
        "a missing directory is never created"
    );
}

#[test]
fn status_shows_dates_with_ages_and_what_has_gone_unscrubbed() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    assert_eq!(code(&sg_stdin(&["put", p(&store), "a"], b"a")), 0);
    assert_eq!(code(&sg(&["scrub", p(&store)])), 0);
    assert_eq!(code(&sg_stdin(&["put", p(&store), "b"], b"b")), 0);
    let out = String::from_utf8_lossy(&sg(&["status", p(&store)]).stdout).into_owned();
    let last = out.lines().find(|l| l.starts_with("last scrub:")).unwrap();
    // "finished 2026-11-27T12:00:00Z (3 seconds ago)": a date, and an age.
    let date = last.split_whitespace().nth(3).unwrap();
    assert!(
        date.len() == 20 && date.ends_with('Z') && date.as_bytes()[10] == b'T',
        "{last}"
    );
    assert!(last.contains("ago)"), "{last}");
    assert!(
        out.contains("least recently scrubbed object: verified 20"),
        "{out}"
    );
    assert!(out.contains("never scrubbed: 1 objects"), "{out}");
}

#[test]
fn ls_escapes_keys_with_newlines_and_offers_json_and_nul_for_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    let keys = ["plain", "two\nlines", "back\\slash"];
    for key in keys {
        assert_eq!(code(&sg_stdin(&["put", p(&store), key], b"x")), 0);
    }
    let out = String::from_utf8_lossy(&sg(&["ls", p(&store)]).stdout).into_owned();
    assert_eq!(out.lines().count(), 3, "one line per key: {out}");
    assert!(
        out.lines().any(|l| l == "two\\nlines") && out.lines().any(|l| l == "back\\\\slash"),
        "{out}"
    );
    let json: serde_json::Value = serde_json::from_slice(&sg(&["ls", p(&store), "--json"]).stdout).unwrap();
    let mut from_json: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    from_json.sort();
    let mut expected = keys.to_vec();
    expected.sort();
    assert_eq!(from_json, expected);
    let raw = sg(&["ls", p(&store), "-0"]).stdout;
    let mut from_nul: Vec<&str> = raw
        .split(|b| *b == 0)
        .filter(|k| !k.is_empty())
        .map(|k| std::str::from_utf8(k).unwrap())
        .collect();
    from_nul.sort();
    assert_eq!(from_nul, expected);
}

#[test]
fn argument_errors_are_one_line_naming_the_commands_help() {
    for args in [
        vec!["scrub", "/x", "--no-such-flag"],
        vec!["put"],
        vec!["scrub", "/x", "--jobs", "0"],
        vec!["no-such-command"],
        vec!["init", "/x", "--data", "many"],
    ] {
        let out = sg(&args);
        assert_eq!(code(&out), 2, "{args:?}");
        assert_one_line_error(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--help')"), "{args:?}: {err}");
    }
    // Help itself is not an error.
    assert_eq!(code(&sg(&["scrub", "--help"])), 0);
}

#[test]
fn the_progress_bar_moves_by_bytes_inside_one_large_object_and_only_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    assert_eq!(code(&sg(&["init", p(&store)])), 0);
    // One object of 1 GiB (1.5 GiB of shard files with 4 + 2).
    let input = dir.path().join("big");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        let block = data(9, 1 << 20);
        for i in 0..1024u32 {
            f.write_all(&i.to_le_bytes()).unwrap();
            f.write_all(&block[4..]).unwrap();
        }
    }
    assert_eq!(code(&sg(&["put", p(&store), "big", p(&input)])), 0);
    std::fs::remove_file(&input).unwrap();
    // On a terminal (`script` gives the command one), about 3 s at the capped rate.
    let command = format!(
        "{} scrub {} --max-rate 512MiB",
        env!("CARGO_BIN_EXE_shardguard"),
        p(&store)
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{out:?}");
    let screen = String::from_utf8_lossy(&out.stdout);
    let frames: std::collections::BTreeSet<&str> = screen
        .split(['\r', '\n'])
        .filter(|frame| frame.contains(" shard bytes (data+parity)") && frame.contains("/1.50 GiB"))
        .filter_map(|frame| frame.split("/1.50 GiB").next()?.rsplit(' ').nth(1))
        .collect();
    assert!(
        frames.len() >= 3,
        "the bar should move inside the object: {frames:?}\n{screen}"
    );
    assert!(screen.contains("0/1 objects"), "{screen}");
    // Not on a terminal: the report alone, nothing on stderr.
    let out = sg(&["scrub", p(&store)]);
    assert_eq!(code(&out), 0);
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("result: clean"));
}

#[test]
fn a_packing_store_from_init_to_rm_through_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    // Too large a threshold for the chunks: a one-line usage error, nothing created.
    let refused = sg(&[
        "init",
        p(&store),
        "--chunk-size",
        "4KiB",
        "--pack-threshold",
        "4KiB",
    ]);
    assert_eq!(code(&refused), 2, "{refused:?}");
    assert_one_line_error(&refused);
    assert!(!store.join(shardguard::STORE_FILE).exists());
    let out = sg(&[
        "init",
        p(&store),
        "--chunk-size",
        "16KiB",
        "--pack-threshold",
        "4KiB",
    ]);
    assert_eq!(code(&out), 0, "{out:?}");
    let small = data(2, 3000);
    let large = data(3, 100_000);
    assert_eq!(code(&sg_stdin(&["put", p(&store), "small"], &small)), 0);
    assert_eq!(code(&sg_stdin(&["put", p(&store), "large"], &large)), 0);
    assert!(sg(&["get", p(&store), "small"]).stdout == small);
    assert!(sg(&["get", p(&store), "large"]).stdout == large);
    assert_eq!(
        String::from_utf8_lossy(&sg(&["ls", p(&store)]).stdout),
        "large\nsmall\n"
    );
    let stat = String::from_utf8_lossy(&sg(&["stat", p(&store), "small"]).stdout).into_owned();
    assert!(stat.contains("pack:"), "{stat}");
    assert!(!String::from_utf8_lossy(&sg(&["stat", p(&store), "large"]).stdout).contains("pack:"));
    assert_eq!(code(&sg(&["scrub", p(&store)])), 0);
    assert_eq!(code(&sg(&["rm", p(&store), "small"])), 0);
    assert_eq!(code(&sg(&["get", p(&store), "small"])), 1);
    assert_eq!(String::from_utf8_lossy(&sg(&["ls", p(&store)]).stdout), "large\n");
    assert_eq!(code(&sg(&["scrub", p(&store)])), 0);
}

#[test]
fn import_stores_a_tree_under_its_relative_paths_and_rm_deletes_many_keys_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    let out = sg(&["init", p(&store), "--pack-threshold", "16KiB"]);
    assert_eq!(code(&out), 0, "{out:?}");
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("a/b")).unwrap();
    let files = [
        ("a/1", data(1, 10)),
        ("a/b/2", data(2, 0)),
        ("3", data(3, 100_000)),
    ];
    for (name, bytes) in &files {
        std::fs::write(tree.join(name), bytes).unwrap();
    }
    std::os::unix::fs::symlink("/etc/passwd", tree.join("link")).unwrap();
    let out = sg(&["import", p(&store), p(&tree), "--prefix", "t/"]);
    assert_eq!(code(&out), 0, "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("imported 3 files (100010 bytes)"), "{said}");
    // The symbolic link is named, not followed.
    assert!(String::from_utf8_lossy(&out.stderr).contains("link"), "{out:?}");
    for (name, bytes) in &files {
        let got = sg(&["get", p(&store), &format!("t/{name}")]);
        assert!(code(&got) == 0 && got.stdout == *bytes, "{name}");
    }
    // Several keys: the absent one is named, the others deleted, exit 1.
    let out = sg(&["rm", p(&store), "t/a/1", "nothere", "t/3"]);
    assert_eq!(code(&out), 1, "{out:?}");
    assert_one_line_error(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothere"));
    let ls = sg(&["ls", p(&store)]);
    assert_eq!(String::from_utf8_lossy(&ls.stdout), "t/a/b/2\n");
    assert_eq!(code(&sg(&["rm", p(&store), "t/a/b/2"])), 0);
    // A key that would be invalid (here too long): a usage error naming the file, before
    // anything is stored.
    let long = "p".repeat(1100);
    let out = sg(&["import", p(&store), p(&tree), "--prefix", &long]);
    assert_eq!(code(&out), 2, "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing imported"),
        "{out:?}"
    );
    assert!(sg(&["ls", p(&store)]).stdout.is_empty());
    // A directory that is not there: one line, exit 8, nothing stored.
    let out = sg(&["import", p(&store), p(&dir.path().join("none"))]);
    assert_eq!(code(&out), 8, "{out:?}");
    assert_one_line_error(&out);
}
