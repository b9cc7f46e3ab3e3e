#!/usr/bin/env python3
"""Many small files (issue 13): a packing shardguard store (4 + 2, 64 KiB pack threshold) against
the same files as plain files protected by SnapRAID (4 data disks + 1 parity, as the issue's
table), all directories of one filesystem. Same run, medians of several runs:

- disk space per object (allocated blocks) and files per object, against the raw bytes;
- full scrub, cold page cache (dropped before every run) and warm: `shardguard scrub` against
  `snapraid scrub -p 100 -o 0`;
- listing, cold: `shardguard ls` against `find` over the plain files;
- delete of 1,000 objects: `shardguard rm` of 1,000 keys (one batch) against unlinking the
  same number of plain files, each followed by an fsync of its directory.

Usage: python3 benches/small_vs_snapraid.py [RUNS] [OBJECTS]  (defaults 3 and 100000; needs root
to drop the page cache, and for apt-get if snapraid is missing). SHARDGUARD_BENCH_DIR sets where
the data lives (default /tmp; put it on a real disk, not tmpfs).
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from vs_snapraid import snapraid_synced

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
OBJECTS = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
SIZE = 4096
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SG = os.path.join(REPO, "target", "release", "shardguard")


def run(*cmd, ok=(0,), out=subprocess.DEVNULL):
    p = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE)
    if p.returncode not in ok:
        sys.exit(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stderr.decode()}")
    return p


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def timed(*cmd, cold, ok=(0,)):
    if cold:
        drop_caches()
    start = time.perf_counter()
    run(*cmd, ok=ok)
    return time.perf_counter() - start


def median_time(*cmd, cold, ok=(0,)):
    run(*cmd, ok=ok)  # warm-up: binaries, and the page cache for the warm runs
    return statistics.median(timed(*cmd, cold=cold, ok=ok) for _ in range(RUNS))


def usage(directory):
    """Allocated bytes and regular files under `directory`."""
    blocks, files = 0, 0
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            blocks += st.st_blocks * 512
        files += len(filenames)
    return blocks, files


def unlink_with_dir_fsync(paths):
    start = time.perf_counter()
    for path in paths:
        os.unlink(path)
        fd = os.open(os.path.dirname(path), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    return time.perf_counter() - start


def main():
    if shutil.which("snapraid") is None:
        run("apt-get", "update", "-qq")
        run("apt-get", "install", "-y", "-qq", "snapraid")
    run("cargo", "build", "--release", "--quiet", "--manifest-path", os.path.join(REPO, "Cargo.toml"))
    root = tempfile.mkdtemp(prefix="sg-small-", dir=os.environ.get("SHARDGUARD_BENCH_DIR", "/tmp"))
    try:
        disks = [os.path.join(root, f"d{i}") for i in range(4)]
        for d in disks + [os.path.join(root, "parity"), os.path.join(root, "content")]:
            os.makedirs(d)
        # Mail-like: 100 files a directory, spread over the four disks.
        names = []
        for i in range(OBJECTS):
            name = f"mail/{i // 100:04}/{i:06}.eml"
            path = os.path.join(disks[i % 4], name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(os.urandom(SIZE))
            names.append((f"d{i % 4}/{name}", path))

        snap = snapraid_synced(root, disks, [f"{root}/content", f"{root}/parity"])

        store = os.path.join(root, "sg")
        run(SG, "init", store, "--data", "4", "--parity", "2", "--pack-threshold", "64KiB")
        for i, d in enumerate(disks):
            run(SG, "import", store, d, "--prefix", f"d{i}/")

        raw = OBJECTS * SIZE
        sg_bytes, sg_files = usage(store)
        plain_bytes, plain_files = 0, 0
        for d in disks:
            b, f = usage(d)
            plain_bytes, plain_files = plain_bytes + b, plain_files + f

        results = []
        for cold in (True, False):
            snap_s = median_time(*snap, "-p", "100", "-o", "0", "scrub", cold=cold)
            sg_s = median_time(SG, "scrub", store, cold=cold)
            results.append((f"full scrub, {'cold' if cold else 'warm'} (s)", sg_s, "snapraid", snap_s))
        find_s = median_time("find", *disks, cold=True)
        ls_s = median_time(SG, "ls", store, cold=True)
        results.append(("ls, cold (s)", ls_s, "find", find_s))

        # Deletes: 1,000 objects, RUNS times, each run on different objects.
        rm_runs, unlink_runs = [], []
        for r in range(RUNS):
            batch = names[r * 1000:(r + 1) * 1000]
            drop_caches()
            start = time.perf_counter()
            run(SG, "rm", store, *[key for key, _ in batch])
            rm_runs.append(time.perf_counter() - start)
            drop_caches()
            unlink_runs.append(unlink_with_dir_fsync([path for _, path in batch]))
        results.append(("delete 1,000 (s)", statistics.median(rm_runs), "unlink+dir fsync",
                        statistics.median(unlink_runs)))

        print(f"{OBJECTS} objects of {SIZE} B; shardguard 4 + 2 packing (64 KiB), SnapRAID 4 + 1; "
              f"medians of {RUNS} runs")
        print(f"disk space: shardguard {sg_bytes / OBJECTS:,.0f} B/object "
              f"({sg_bytes / raw:.2f}x raw, {sg_files / OBJECTS:.4f} files/object); plain files "
              f"{plain_bytes / OBJECTS:,.0f} B/object ({plain_bytes / raw:.2f}x raw)")
        print(f"{'':28}{'shardguard':>11}  {'baseline':<17}{'':>9}{'speed ratio':>12}")
        for what, sg_s, base, base_s in results:
            print(f"{what:28}{sg_s:11.2f}  {base:<17}{base_s:9.2f}{base_s / sg_s:11.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
