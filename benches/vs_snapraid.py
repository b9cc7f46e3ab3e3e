#!/usr/bin/env python3
"""shardguard scrub against SnapRAID's full scrub, and rebuilding a wiped disk against
`snapraid fix`, on the same ~1 GiB of large and small files, 4 data disks + 1 parity, all
directories of one filesystem, page cache warm. Medians of several runs, same machine, same run.

Usage: python3 benches/vs_snapraid.py [RUNS]   (installs Debian's snapraid if missing; needs root
for apt-get). SHARDGUARD_BENCH_DIR sets where the data lives (default /tmp).
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SG = os.path.join(REPO, "target", "release", "shardguard")


def run(*cmd, ok=(0,)):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode not in ok:
        sys.exit(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout.decode()}\n{p.stderr.decode()}")
    return p


def timed(*cmd, ok=(0,)):
    start = time.perf_counter()
    run(*cmd, ok=ok)
    return time.perf_counter() - start


def median_time(*cmd, ok=(0,)):
    run(*cmd, ok=ok)  # warm-up: page cache and binaries
    return statistics.median(timed(*cmd, ok=ok) for _ in range(RUNS))


def snapraid_synced(root, disks, content_dirs):
    """Writes a SnapRAID configuration for `disks` (one parity file in root/parity, a content
    file in each of `content_dirs`), runs `snapraid sync`, and returns the command prefix."""
    conf = os.path.join(root, "snapraid.conf")
    with open(conf, "w") as f:
        f.write(f"parity {root}/parity/snapraid.parity\n")
        for d in content_dirs:
            f.write(f"content {d}/snapraid.content\n")
        for i, d in enumerate(disks):
            f.write(f"data d{i} {d}/\n")
    snap = ["snapraid", "-c", conf, "--test-skip-device"]
    run(*snap, "sync")
    return snap


def wipe(directory, keep=()):
    for name in os.listdir(directory):
        if name in keep:
            continue
        path = os.path.join(directory, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def main():
    if shutil.which("snapraid") is None:
        run("apt-get", "update", "-qq")
        run("apt-get", "install", "-y", "-qq", "snapraid")
    run("cargo", "build", "--release", "--quiet", "--manifest-path", os.path.join(REPO, "Cargo.toml"))
    root = tempfile.mkdtemp(prefix="sg-vs-snapraid-", dir=os.environ.get("SHARDGUARD_BENCH_DIR", "/tmp"))
    try:
        disks = [os.path.join(root, f"d{i}") for i in range(4)]
        for d in disks + [os.path.join(root, "parity"), os.path.join(root, "content")]:
            os.makedirs(d)
        # ~1 GiB: 8 large files of 96 MiB and 2048 small ones of 128 KiB, spread over the disks.
        files = [(f"large/{i}.bin", 96 << 20) for i in range(8)]
        files += [(f"small/{i // 100}/{i}.bin", 128 << 10) for i in range(2048)]
        block = os.urandom(96 << 20)
        for n, (name, size) in enumerate(files):
            path = os.path.join(disks[n % 4], name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(block[(n * 4096) % (1 << 20):][:size] if size < (1 << 20) else block[:size])
        total = sum(size for _, size in files)

        snap = snapraid_synced(root, disks, [f"{root}/content", f"{root}/d0"])

        store = os.path.join(root, "sg")
        run(SG, "init", store, "--data", "4", "--parity", "1")
        for n, (name, _) in enumerate(files):
            run(SG, "put", store, name, os.path.join(disks[n % 4], name))

        snap_scrub = median_time(*snap, "-p", "100", "-o", "0", "scrub")
        sg_scrub = median_time(SG, "scrub", store)

        # Rebuild one wiped disk: SnapRAID restores d1's files, shardguard rebuilds loc-01.
        wipe(disks[1])
        snap_fix = timed(*snap, "-d", "d1", "fix")
        wipe(os.path.join(store, "loc-01"))
        sg_fix = timed(SG, "scrub", store, "--repair", ok=(1,))
        run(SG, "scrub", store)

        gib = total / 2**30
        print(f"data: {len(files)} files, {gib:.2f} GiB; 4 data + 1 parity; medians of {RUNS} runs")
        print(f"{'':34}{'shardguard':>12}{'snapraid':>12}{'ratio':>8}")
        print(f"{'full scrub (s)':34}{sg_scrub:12.2f}{snap_scrub:12.2f}{sg_scrub / snap_scrub:8.2f}")
        print(f"{'rebuild a wiped disk (s, 1 run)':34}{sg_fix:12.2f}{snap_fix:12.2f}{sg_fix / snap_fix:8.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
