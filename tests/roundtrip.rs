//! Every object size reads back byte-exact: empty, tiny, around chunk and stripe boundaries, and
//! a 256 MiB object streamed through bounded memory.

mod common;

use std::io::{Read, Write};

use common::{data, store};

#[test]
fn sizes_around_chunk_and_stripe_boundaries_round_trip() {
    for (k, m) in [(4u8, 2u8), (1, 2), (3, 3), (2, 1), (3, 0)] {
        let chunk = 64u32;
        let (_dir, store) = store(k, m, chunk);
        let c = chunk as usize;
        let s = c * usize::from(k);
        for (i, len) in [0, 1, c - 1, c, c + 1, s - 1, s, s + 1, 3 * s + 7]
            .into_iter()
            .enumerate()
        {
            let key = format!("obj-{len}");
            let bytes = data(i as u64, len);
            let put = store.put(&key, &bytes[..]).unwrap();
            assert_eq!(put.len, len as u64);
            assert_eq!(store.get_bytes(&key).unwrap(), bytes, "k={k} m={m} len={len}");
        }
    }
}

#[test]
fn overwrite_replaces_and_delete_removes() {
    let (_dir, store) = store(2, 1, 128);
    store.put("k", &b"first"[..]).unwrap();
    let v2 = store.put("k", &b"second version"[..]).unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(store.get_bytes("k").unwrap(), b"second version");
    assert_eq!(store.list().unwrap().len(), 1);
    store.delete("k").unwrap();
    assert!(matches!(
        store.get_bytes("k"),
        Err(shardguard::Error::NotFound { .. })
    ));
    assert!(matches!(
        store.delete("k"),
        Err(shardguard::Error::NotFound { .. })
    ));
    assert!(store.list().unwrap().is_empty());
    store.put("k", &b"third"[..]).unwrap();
    assert_eq!(store.get_bytes("k").unwrap(), b"third");
}

/// A reader that produces `len` seeded bytes without holding them (64 KiB blocks, each from its
/// own seed, so the stream does not depend on read sizes), and a writer that checks them as they
/// stream back, so the test itself holds no object-sized buffer.
struct Pattern {
    seed: u64,
    pos: u64,
    len: u64,
    block: Vec<u8>,
}

const BLOCK: u64 = 64 << 10;

impl Pattern {
    fn new(seed: u64, len: u64) -> Self {
        Pattern {
            seed,
            pos: 0,
            len,
            block: Vec::new(),
        }
    }
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos % BLOCK == 0 && self.pos < self.len {
            self.block = data(self.seed ^ (self.pos / BLOCK) << 20, BLOCK as usize);
        }
        let in_block = (self.pos % BLOCK) as usize;
        // Odd-sized reads exercise stripe assembly across read boundaries.
        let n = buf
            .len()
            .min((self.len - self.pos) as usize)
            .min(BLOCK as usize - in_block)
            .min(77_777);
        buf[..n].copy_from_slice(&self.block[in_block..in_block + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

struct Check {
    expected: Pattern,
    checked: u64,
}

impl Write for Check {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut want = vec![0u8; buf.len()];
        self.expected.read_exact(&mut want)?;
        assert!(want == buf, "mismatch near byte {}", self.checked);
        self.checked += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_256_mib_object_streams_with_stripe_bounded_buffers() {
    let len = 256u64 << 20;
    let (_dir, store) = store(4, 2, 1 << 20);
    store.put("big", Pattern::new(9, len)).unwrap();
    let mut reader = store.get("big").unwrap();
    assert_eq!(reader.len(), len);
    // The reader's buffers are one stripe: (k + m) chunks, whatever the object size.
    assert!(
        reader.buffered_bytes() <= 6 * ((1 << 20) + 4),
        "{}",
        reader.buffered_bytes()
    );
    let mut check = Check {
        expected: Pattern::new(9, len),
        checked: 0,
    };
    assert_eq!(reader.copy_to(&mut check).unwrap(), len);
    assert_eq!(check.checked, len);
}

/// Shard files over 8 MiB have their writeback started early while being written (an fsynced
/// store only); the bytes and the file lengths are exactly those of a page-cache put.
#[test]
fn an_fsynced_put_with_early_writeback_reads_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let fsynced = shardguard::Store::builder()
        .data_shards(2)
        .parity_shards(1)
        .chunk_size(1 << 20)
        .create(dir.path())
        .unwrap();
    // 2 data shards of ~20.5 MiB each: early writeback starts twice per shard file, mid-chunk.
    let bytes = data(41, (41 << 20) + 12_345);
    fsynced.put("big", &bytes[..]).unwrap();
    assert_eq!(fsynced.get_bytes("big").unwrap(), bytes);
    let (_page_dir, page_cache) = store(2, 1, 1 << 20);
    page_cache.put("big", &bytes[..]).unwrap();
    for shard in 0..3 {
        let len = |s: &shardguard::Store| {
            std::fs::metadata(s.shard_path("big", shard).unwrap())
                .unwrap()
                .len()
        };
        assert_eq!(len(&fsynced), len(&page_cache), "shard {shard}");
    }
}
